"""The contract's error codes and the typed errors that carry them.

`ErrorCode` is the one list of codes: the service sends them in "error" replies, the command line
prints them, and every error class of this package (here, in `model.errors`, in the capture
format) takes its `code` from it. Wire codes (`ErrorCode.WIRE`) are what an engine can receive;
local codes (`ErrorCode.LOCAL`) are raised on one side only (a config file, a checkpoint, a
capture on disk, a command-line flag) and never cross the protocol. docs/protocol.md lists the wire
codes; a test holds the two to each other and every error class's code to this list.

Torch-free: the engine side imports this.
"""

from __future__ import annotations


class ErrorCode:
    BAD_MESSAGE = "bad_message"  # not msgpack, not a map, too large
    UNKNOWN_TYPE = "unknown_type"
    BAD_FIELD = "bad_field"  # missing, wrong type, out of range, or unknown field
    PROTOCOL_MISMATCH = "protocol_mismatch"
    HELLO_FIRST = "hello_first"
    UNKNOWN_SESSION = "unknown_session"
    SESSION_EVICTED = "session_evicted"  # idle too long: its temporal state was evicted for another
    BAD_RING = "bad_ring"  # a handle that cannot be opened, or a region that does not fit
    BAD_SLOT = "bad_slot"
    BAD_SEQUENCE = "bad_sequence"
    NOT_READY = "not_ready"  # the slot's ready signal does not show this frame
    SESSION_LIMIT = "session_limit"
    CACHE_FULL = "cache_full"
    BAD_LAYOUT = "bad_layout"
    BAD_RESOLUTION = "bad_resolution"
    BAD_PROMPT = "bad_prompt"
    BAD_INPUT = "bad_input"
    UNKNOWN_PRESET = "unknown_preset"  # `preset` names no preset of the service's presets file
    NO_PRESETS_FILE = "no_presets_file"  # `save_preset` on a service started without --presets
    RECORDING_UNAVAILABLE = "recording_unavailable"  # `record` without the video extra, or an unwritable folder
    NO_WORKER = "no_worker"  # a multi-worker service: every worker that could take this is restarting or not taking messages
    INTERNAL = "internal"
    # Local: never sent by the service.
    BAD_CONFIG = "bad_config"  # a service or model configuration
    BAD_CHECKPOINT = "bad_checkpoint"  # a weights file
    BAD_DEVICE = "bad_device"  # a --device that is not cpu, cuda or cuda:N, or a GPU that is absent
    BAD_CAPTURE = "bad_capture"  # a capture folder
    CAPTURE_VERSION = "capture_version"
    BAD_CHUNK = "bad_chunk"
    ADDRESS_IN_USE = "address_in_use"  # `serve` on an address another live service holds

    LOCAL: frozenset = frozenset({BAD_CONFIG, BAD_CHECKPOINT, BAD_DEVICE, BAD_CAPTURE, CAPTURE_VERSION, BAD_CHUNK,
                                  ADDRESS_IN_USE})

    @classmethod
    def all(cls) -> tuple[str, ...]:
        """Every code, in the order defined above."""
        return tuple(v for k, v in vars(cls).items() if k.isupper() and isinstance(v, str))

    @classmethod
    def wire(cls) -> tuple[str, ...]:
        """The codes an engine can receive in an "error" reply."""
        return tuple(c for c in cls.all() if c not in cls.LOCAL)


class StreamStyleError(Exception):
    """Base of every error this package raises on purpose: a message and a code from `ErrorCode`."""

    code = ErrorCode.INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class LayoutError(StreamStyleError, ValueError):
    """A G-buffer layout is missing a channel the model needs, or describes one wrongly."""

    code = ErrorCode.BAD_LAYOUT


class ResolutionError(StreamStyleError, ValueError):
    """A frame size outside the contract's range (`limits.check_resolution`), or one the model
    cannot run (e.g. smaller than its token stride)."""

    code = ErrorCode.BAD_RESOLUTION


class InputError(StreamStyleError, ValueError):
    """A frame's buffers have the wrong shape, dtype or device, or hold NaN or infinity."""

    code = ErrorCode.BAD_INPUT


class DeviceError(StreamStyleError, ValueError):
    """A device name that is not cpu, cuda or cuda:N, or a CUDA device this machine lacks."""

    code = ErrorCode.BAD_DEVICE


class RingError(StreamStyleError):
    """A ring that cannot be created or opened, or a region that does not fit its allocation."""

    code = ErrorCode.BAD_RING
