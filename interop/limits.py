"""Every limit of the engine contract, defined once: the protocol version, message and ring sizes,
frame sizes, parameter ranges, prompt and blend rules, string lengths, formats, backends, and the
liveness defaults. Torch-free and import-free (the standard library only), so the Python client,
the service, the model and the generated C header all take their numbers from here.

What must hold:
- every other module imports these names instead of writing the number again (docs/protocol.md's
  limits table is generated from `LIMITS` by `limits_table()`, and a test compares the two);
- a model's own limit may be tighter, never looser: a preset's `max_prompts` is at most
  `MAX_PROMPT_PARTS`, its token stride at least `MIN_WIDTH`/`MIN_HEIGHT` (tested);
- `check_resolution` is the one size check, run by every command and by the service's `open`
  before anything starts; the model adds only its own constraint (the token stride).

Names are plain UPPER_CASE constants (ints, floats, strings, tuples of strings) so a C header
generator can take them as they are.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile

from .errors import DeviceError, ResolutionError

PROTOCOL_VERSION = 1

# Messages. The service's ZeroMQ MAXMSGSIZE is set above the protocol's limit, so a moderately
# oversize message still reaches the decoder and gets a typed bad_message; a larger one drops the
# connection instead of being buffered.
MAX_MESSAGE_BYTES = 1 << 20
SOCKET_MAX_MESSAGE_BYTES = 4 * MAX_MESSAGE_BYTES
SOCKET_HWM = 1000  # ZeroMQ high-water marks, both directions, both sides

# Integers on the wire: msgpack's positive int64 range for ids, 2**62 for byte offsets and sizes.
MAX_ID = 2 ** 63 - 1  # req, session, seq
MAX_REGION_BYTES = 2 ** 62  # a region's offset and size, a signal block's offset
MAX_HELLO_PROTOCOL = 2 ** 31  # the `protocol` a hello may name (any other value is bad_field)
MIN_DEVICE, MAX_DEVICE = -1, 64  # a region's CUDA device; -1 for shared memory
CUDA_IPC_HANDLE_BYTES = 64  # a cudaIpcMemHandle_t or cudaIpcEventHandle_t

# The ring.
MIN_SLOTS = 3
MAX_SLOTS = 8
BACKENDS = ("shm", "cuda-ipc")

# Frame size: per dimension, the same for every model (a model also refuses sizes below its token
# stride). 7680x4320 is 8K UHD.
MIN_WIDTH = MIN_HEIGHT = 8
MAX_WIDTH = 7680
MAX_HEIGHT = 4320

# Output slot formats: bytes per pixel (RGBA, 8-bit unorm or half float).
OUTPUT_FORMATS = ("rgba8", "rgba16f")
OUTPUT_BYTES_PER_PIXEL = {"rgba8": 4, "rgba16f": 8}
DEFAULT_OUTPUT_FORMAT = "rgba8"

# Frame parameters.
MIN_STEPS = 1
MAX_STEPS = 4
DEFAULT_STEPS = 2
MIN_STRENGTH = 0.0
MAX_STRENGTH = 1.0
DEFAULT_STRENGTH = 0.5
MIN_DEADLINE_MS = 0.1
MAX_DEADLINE_MS = 60000.0
DEFAULT_DEADLINE_MS_GPU = 100.0
DEFAULT_DEADLINE_MS_CPU = 5000.0
MIN_SEED = 0
MAX_SEED = 2 ** 63 - 1
MAX_DT_S = 10.0  # a frame's `dt`, seconds
MATRIX_NUMBERS = 16  # `view` and `proj`, row-major 4x4
JITTER_NUMBERS = 2

# Prompts. A blend is [[text, weight], ...]: at most MAX_PROMPT_PARTS parts on the wire (the served
# model's `max_prompts`, 4 for every shipped preset, may be fewer: beyond it `bad_prompt`), each
# weight finite and within MIN_BLEND_WEIGHT..MAX_BLEND_WEIGHT (weights are normalised to sum 1;
# the bounds keep every normalised weight far from 0, whose log the attention bias takes).
MAX_PROMPT_CHARS = 2000
MAX_PROMPT_PARTS = 8
MIN_BLEND_WEIGHT = 1e-6
MAX_BLEND_WEIGHT = 1e6
MAX_BLEND_FRAMES = 600

# Strings.
MAX_STRING_CHARS = 256  # any string field without a tighter limit
MAX_CLIENT_NAME_CHARS = 128
MAX_SHM_NAME_CHARS = 250  # a POSIX shared-memory name, without the leading "/" (which is refused)

# Liveness defaults (the service's config may change them; `welcome` says what applies).
DEFAULT_HEARTBEAT_MS = 500
DEFAULT_REAP_AFTER_MS = 10000
MIN_HEARTBEAT_MS = 10  # and reap_after_ms at least twice heartbeat_ms

# Addresses.
DEFAULT_TCP_PORT = 5599
SOCKET_FILE = "streamstyle.sock"

# Devices a service or a command may run on: cpu, cuda or cuda:N.
DEVICE_PATTERN = r"cpu|cuda(:[0-9]+)?"


def default_bind() -> str:
    """ipc:// in a per-user runtime folder on Linux, loopback TCP elsewhere."""
    if sys.platform.startswith("linux"):
        base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(tempfile.gettempdir(), f"streamstyle-{os.getuid()}")
        return f"ipc://{os.path.join(base, SOCKET_FILE)}"
    return f"tcp://127.0.0.1:{DEFAULT_TCP_PORT}"


def check_resolution(width, height) -> tuple[int, int]:
    """The one frame-size check of the contract: integers within MIN..MAX per dimension.
    Returns (width, height); raises `ResolutionError` (code bad_resolution) naming the problem."""
    for name, v, lo, hi in (("width", width, MIN_WIDTH, MAX_WIDTH), ("height", height, MIN_HEIGHT, MAX_HEIGHT)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ResolutionError(f"{name} must be an integer, got {v!r}")
        if not lo <= v <= hi:
            raise ResolutionError(f"{name} {v} is outside {lo}..{hi} "
                                  f"(frame sizes run from {MIN_WIDTH}x{MIN_HEIGHT} to {MAX_WIDTH}x{MAX_HEIGHT})")
    return width, height


def blend_weight_ok(weight) -> bool:
    """A blend part's weight: a finite number (not a bool) within MIN..MAX_BLEND_WEIGHT."""
    return (not isinstance(weight, bool) and isinstance(weight, (int, float)) and math.isfinite(weight)
            and MIN_BLEND_WEIGHT <= weight <= MAX_BLEND_WEIGHT)


def check_device_name(device) -> str:
    """`cpu`, `cuda` or `cuda:N`; anything else raises `DeviceError` (code bad_device). Whether the
    machine has that GPU is for the caller to check (it needs torch)."""
    if not isinstance(device, str) or not re.fullmatch(DEVICE_PATTERN, device):
        raise DeviceError(f"device must be cpu, cuda or cuda:N, not {device!r}")
    return device


# The table docs/protocol.md shows, in order: (what, value, where it applies).
LIMITS = (
    ("protocol version", f"{PROTOCOL_VERSION}", "`hello.protocol`; another is `protocol_mismatch`"),
    ("message size", f"at most {MAX_MESSAGE_BYTES} bytes (1 MiB)", "one msgpack map per ZeroMQ message; larger is `bad_message`, above "
     f"{SOCKET_MAX_MESSAGE_BYTES} bytes the connection drops"),
    ("high-water marks", f"{SOCKET_HWM} messages", "both directions, both sides"),
    ("`req`, `session`, `seq`", f"0 or 1 to {MAX_ID}", "`req` from 0, `session` and `seq` from 1"),
    ("frame size", f"{MIN_WIDTH}x{MIN_HEIGHT} to {MAX_WIDTH}x{MAX_HEIGHT}", "`open.width`/`height` (per dimension; "
     "also at least the model's token stride); `bad_resolution` otherwise"),
    ("ring slots", f"{MIN_SLOTS} to {MAX_SLOTS}", "`ring.slots`; `frame.slot` below it"),
    ("ring backends", ", ".join(f"`{b}`" for b in BACKENDS), "`ring.backend` (`welcome.backends` says which this service takes)"),
    ("output formats", ", ".join(f"`{f}` ({OUTPUT_BYTES_PER_PIXEL[f]} bytes per pixel)" for f in OUTPUT_FORMATS),
     f"`ring.output_format`, default `{DEFAULT_OUTPUT_FORMAT}`"),
    ("region offset, size", f"0 to {MAX_REGION_BYTES}; size from 1", "ring regions and the shm signal block's offset"),
    ("region device", f"{MIN_DEVICE} to {MAX_DEVICE}", "-1 for `shm`"),
    ("CUDA IPC handles", f"{CUDA_IPC_HANDLE_BYTES} bytes", "memory and event handles of `cuda-ipc` rings"),
    ("shm segment name", f"1 to {MAX_SHM_NAME_CHARS} characters, no `/`", "POSIX names without their leading `/`"),
    ("`steps`", f"{MIN_STEPS} to {MAX_STEPS}, default {DEFAULT_STEPS}", "`params`"),
    ("`strength`", f"{MIN_STRENGTH:g} to {MAX_STRENGTH:g}, default {DEFAULT_STRENGTH:g}", "`params`"),
    ("`deadline_ms`", f"{MIN_DEADLINE_MS:g} to {MAX_DEADLINE_MS:g}, default {DEFAULT_DEADLINE_MS_GPU:g} (GPU) or "
     f"{DEFAULT_DEADLINE_MS_CPU:g} (CPU)", "`params`; the service config's `deadline_ms`"),
    ("`seed`", f"{MIN_SEED} to {MAX_SEED}", "`open.seed`, `params.seed`"),
    ("`dt`", f"0 to {MAX_DT_S:g} s", "`frame.dt`"),
    ("`view`, `proj`, `jitter`", f"{MATRIX_NUMBERS}, {MATRIX_NUMBERS} and {JITTER_NUMBERS} finite numbers", "`frame`"),
    ("prompt text", f"at most {MAX_PROMPT_CHARS} characters", "each prompt or blend part"),
    ("blend parts", f"1 to {MAX_PROMPT_PARTS}", "a `[[text, weight], ...]` prompt; the model serves at most its "
     "`max_prompts` (4 for every shipped preset), old and new parts together while blending; `bad_prompt` beyond"),
    ("blend weight", f"{MIN_BLEND_WEIGHT:g} to {MAX_BLEND_WEIGHT:g}, finite", "each part's weight (normalised to sum 1)"),
    ("`blend_frames`", f"0 to {MAX_BLEND_FRAMES}", "`prompt`"),
    ("`client` name", f"at most {MAX_CLIENT_NAME_CHARS} characters", "`hello`"),
    ("other strings", f"at most {MAX_STRING_CHARS} characters", "any string field not listed above"),
    ("`heartbeat_ms`", f"default {DEFAULT_HEARTBEAT_MS}, at least {MIN_HEARTBEAT_MS}", "service config; `welcome` says what applies"),
    ("`reap_after_ms`", f"default {DEFAULT_REAP_AFTER_MS}, at least twice `heartbeat_ms`", "service config; `welcome` says what applies"),
    ("device", "`cpu`, `cuda` or `cuda:N`", "`serve --device`, the service config, every command's `--device`"),
)


def limits_table() -> str:
    """`LIMITS` as the markdown table docs/protocol.md carries (between its limits markers)."""
    rows = ["| limit | value | applies to |", "| --- | --- | --- |"]
    rows += [f"| {what} | {value} | {where} |" for what, value, where in LIMITS]
    return "\n".join(rows) + "\n"
