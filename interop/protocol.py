"""The wire protocol between an engine (ZeroMQ DEALER) and the service (ROUTER), version 1.

Every message is one msgpack map with a "type" key. Decoding is bounded (message size, msgpack
lengths, string map keys only, at every level) and every message is validated here, at the edge,
into a frozen dataclass: required fields present, types and ranges right, no unknown fields. Past
this module the service trusts its inputs. A message that fails becomes a `ProtocolError` whose
`code` goes back to the peer in an "error" reply, with the `req`, `session` and `seq` the raw map
held as integers (its `context`), however much of the rest failed: a client waiting on `req` gets
the answer instead of a timeout. docs/protocol.md is the specification. Every limit is
`interop.limits`'s and every code `interop.errors.ErrorCode`; both are re-exported here.
"""

from __future__ import annotations

import dataclasses
import math
import re
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import msgpack

from .errors import ErrorCode  # noqa: F401  (re-exported: the one list of codes)
from .limits import (BACKENDS, CUDA_IPC_HANDLE_BYTES, JITTER_NUMBERS, MATRIX_NUMBERS, MAX_BLEND_FRAMES,  # noqa: F401
                     MAX_BLEND_WEIGHT, MAX_CLIENT_NAME_CHARS, MAX_DEADLINE_MS, MAX_DEVICE, MAX_DT_S, MAX_HEIGHT,
                     MAX_HELLO_PROTOCOL, MAX_ID, MAX_MESSAGE_BYTES, MAX_PRESET_NAME_CHARS, MAX_PROMPT_CHARS, MAX_PROMPT_PARTS,
                     MAX_REGION_BYTES, MAX_SEED, MAX_SHM_NAME_CHARS, MAX_SLOTS, MAX_STEPS, MAX_STRENGTH,
                     MAX_STRING_CHARS, MAX_WIDTH, MIN_BLEND_WEIGHT, MIN_DEADLINE_MS, MIN_DEVICE, MIN_HEIGHT,
                     MIN_SEED, MIN_SLOTS, MIN_STEPS, MIN_STRENGTH, MIN_WIDTH, OUTPUT_FORMATS, PRESET_NAME_PATTERN,
                     PROTOCOL_VERSION, RECORD_WHAT)


CONTEXT_FIELDS = ("req", "session", "seq")  # what an error reply echoes, so the peer can match it


class ProtocolError(Exception):
    """A refused message: `code` (an ErrorCode), `message`, and `context`, the fields of
    CONTEXT_FIELDS the raw message held as integers (empty when it was not a readable map)."""

    def __init__(self, code: str, message: str, context: Mapping[str, int] | None = None):
        super().__init__(message)
        self.code, self.message = code, message
        self.context = dict(context or {})


def context_of(raw: Any) -> dict:
    """The `req`, `session` and `seq` of a decoded map, those that are integers (not booleans),
    whatever else is wrong with it."""
    if not isinstance(raw, dict):
        return {}
    return {k: v for k in CONTEXT_FIELDS if (v := raw.get(k)).__class__ is int}


def encode(msg: Mapping[str, Any]) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


DONE_TIMINGS = ("queue_ms", "model_ms", "write_ms", "total_ms")  # a done reply's `timings`, in this order
_F64 = struct.Struct(">d")  # msgpack's float 64 payload (after its 0xcb marker)


class DoneAnswer:
    """A frame's `done` reply encoded before its numbers are known, then filled in: the service
    builds it while the device runs the frame, and once the device is done only `late` and the
    four timings are written into the bytes (one byte and four 8-byte patches), so the answer's
    way out after the GPU wait is a few microseconds of warm code rather than a whole encode
    (which, run cold after a frame's launch work, took 20-30 us: benchmarks/NOTES.md v0.11).

    `fill` then `finish` give exactly `encode` of the same map: msgpack writes a Python float as float 64
    and a bool as one byte whatever their values, so the offsets found here once hold for every
    fill."""

    def __init__(self, reply: Mapping[str, Any]):
        """`reply`: the done's other fields (`session`, `seq`, `slot`), integers."""
        probe = [1.0e300 + i * 1.0e285 for i in range(len(DONE_TIMINGS))]  # four distinct sentinels

        def build(late: bool, values) -> dict:
            return {"type": "done", **reply, "late": late, "timings": dict(zip(DONE_TIMINGS, values))}

        data = encode(build(False, probe))
        self._bytes = bytearray(data)
        self._at = []
        for v in probe:
            mark = b"\xcb" + _F64.pack(v)
            at = data.find(mark)
            if at < 0 or data.find(mark, at + 1) >= 0:
                raise ValueError(f"done reply {reply!r}: a timing's place is not unique in its encoding")
            self._at.append(at + 1)
        flipped = encode(build(True, probe))
        diff = [i for i, (a, b) in enumerate(zip(data, flipped)) if a != b]
        if len(flipped) != len(data) or len(diff) != 1:
            raise ValueError(f"done reply {reply!r}: its late flag is not one byte of its encoding")
        self._late_at = diff[0]
        self.template = data  # the encoding before `fill`: its length is every fill's


    def fill(self, late: bool, queue_ms: float, model_ms: float, write_ms: float) -> None:
        """Write `late` and the first three timings; `finish` writes `total_ms`, the service's time
        up to this answer's hand-over, last."""
        b = self._bytes
        b[self._late_at] = 0xC3 if late else 0xC2
        at = self._at
        _F64.pack_into(b, at[0], queue_ms)
        _F64.pack_into(b, at[1], model_ms)
        _F64.pack_into(b, at[2], write_ms)

    def finish(self, total_ms: float) -> bytes:
        """Write `total_ms`; the answer's bytes."""
        _F64.pack_into(self._bytes, self._at[3], total_ms)
        return bytes(self._bytes)


def decode_raw(data: bytes) -> dict:
    """Bytes -> a map with a string "type", or ProtocolError(bad_message).

    Exactly one msgpack object, nothing after it (`unpackb` reports any trailing bytes, complete
    or not, as ExtraData); map keys are strings at every level: `strict_map_key` still lets
    `bin` keys through, which some C and C++ msgpack libraries write, so every map is looked at
    as it is built."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    odd_keys = []

    def look(m: dict) -> dict:
        for k in m:
            if k.__class__ is not str:
                odd_keys.append(k)
                break
        return m

    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, object_hook=look)
    except msgpack.ExtraData as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "trailing data after the message", context_of(exc.unpacked)) from None
    except Exception as exc:  # msgpack raises several unrelated types for malformed input
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"not a msgpack message: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a message must be a map")
    if odd_keys:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"map keys must be strings (msgpack str), not "
                            f"{type(odd_keys[0]).__name__}", context_of(obj))
    if not isinstance(obj.get("type"), str):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a message needs a string 'type'", context_of(obj))
    return obj


def decode_parts(parts) -> dict:
    """A message as it came off the socket (its ZeroMQ parts after the peer's identity) -> the map
    of `decode_raw`. A message is one part: another count is ProtocolError(bad_message), carrying
    the first part's context if that part is a readable map, so that the peer learns which failed."""
    if len(parts) != 1:
        context = {}
        if parts:
            try:
                context = context_of(decode_raw(parts[0]))
            except ProtocolError as exc:
                context = exc.context
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"a message is one ZeroMQ part; this one has {len(parts)}", context)
    return decode_raw(parts[0])


# --- field checks ---------------------------------------------------------------------------

def _int(v, name, lo=None, hi=None):
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{name} must be an integer")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{name} must be in {lo}..{hi}, got {v}")
    return v


def _num(v, name, lo=None, hi=None):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{name} must be a finite number")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{name} must be in {lo}..{hi}, got {v}")
    return float(v)


def _str(v, name, max_len=MAX_STRING_CHARS, choices=None):
    if not isinstance(v, str) or len(v) > max_len:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{name} must be a string of at most {max_len} characters")
    if choices is not None and v not in choices:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{name} must be one of {', '.join(choices)}, got {v!r}")
    return v


def _dimension(v, name, lo, hi):
    """A frame width or height: out of the contract's range is bad_resolution, as the service's
    own size check (`limits.check_resolution`) says."""
    _int(v, name)
    if not lo <= v <= hi:
        raise ProtocolError(ErrorCode.BAD_RESOLUTION, f"{name} {v} is outside {lo}..{hi} "
                                                      f"(frame sizes run from {MIN_WIDTH}x{MIN_HEIGHT} to {MAX_WIDTH}x{MAX_HEIGHT})")
    return v


def _floats(v, name, n):
    if not isinstance(v, (list, tuple)) or len(v) != n:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{name} must be a list of {n} numbers")
    return tuple(_num(x, f"{name}[{i}]") for i, x in enumerate(v))


def _map(v, name):
    if not isinstance(v, dict):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{name} must be a map")
    return v


# --- messages ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Message:
    TYPE: ClassVar[str] = ""
    # name -> (required, checker(value, name) -> value)
    FIELDS: ClassVar[dict] = {}

    @classmethod
    def parse(cls, raw: Mapping[str, Any]):
        unknown = sorted(set(raw) - set(cls.FIELDS) - {"type"})
        if unknown:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"{cls.TYPE}: unknown field(s) {', '.join(unknown)}")
        kwargs = {}
        for name, (required, check) in cls.FIELDS.items():
            if name not in raw or raw[name] is None:
                if required:
                    raise ProtocolError(ErrorCode.BAD_FIELD, f"{cls.TYPE}: missing field {name!r}")
                continue
            kwargs[name] = check(raw[name], f"{cls.TYPE}.{name}")
        return cls(**kwargs)

    def wire(self) -> dict:
        out = {"type": self.TYPE}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


def _prompt(v, name):
    """A string, or [[text, weight], ...]."""
    if isinstance(v, str):
        return _str(v, name, MAX_PROMPT_CHARS)
    if isinstance(v, list) and 1 <= len(v) <= MAX_PROMPT_PARTS:
        out = []
        for i, part in enumerate(v):
            if not (isinstance(part, (list, tuple)) and len(part) == 2):
                raise ProtocolError(ErrorCode.BAD_FIELD, f"{name}[{i}] must be [text, weight]")
            out.append((_str(part[0], f"{name}[{i}].text", MAX_PROMPT_CHARS),
                        _num(part[1], f"{name}[{i}].weight", MIN_BLEND_WEIGHT, MAX_BLEND_WEIGHT)))
        return tuple(out)
    raise ProtocolError(ErrorCode.BAD_FIELD, f"{name} must be a string or a list of [text, weight]")


def _params(v, name):
    v = _map(v, name)
    allowed = {"steps": lambda x, n: _int(x, n, MIN_STEPS, MAX_STEPS),
               "strength": lambda x, n: _num(x, n, MIN_STRENGTH, MAX_STRENGTH),
               "reset": lambda x, n: bool(x) if isinstance(x, bool) else _int(x, n, 0, 1) == 1,
               "seed": lambda x, n: _int(x, n, MIN_SEED, MAX_SEED),
               "deadline_ms": lambda x, n: _num(x, n, MIN_DEADLINE_MS, MAX_DEADLINE_MS)}
    unknown = sorted(set(v) - set(allowed))
    if unknown:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{name}: unknown parameter(s) {', '.join(map(str, unknown))}")
    return {k: allowed[k](x, f"{name}.{k}") for k, x in v.items()}


def _region(v, name, backend):
    v = _map(v, name)
    unknown = sorted(set(v) - {"handle", "offset", "size", "device"})
    if unknown:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{name}: unknown field(s) {', '.join(map(str, unknown))}")
    handle = v.get("handle")
    if backend == "shm":
        handle = _str(handle, f"{name}.handle", MAX_SHM_NAME_CHARS)
    elif not (isinstance(handle, bytes) and len(handle) == CUDA_IPC_HANDLE_BYTES):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{name}.handle must be the 64 bytes of a CUDA IPC memory handle")
    return {"handle": handle, "offset": _int(v.get("offset"), f"{name}.offset", 0, MAX_REGION_BYTES),
            "size": _int(v.get("size"), f"{name}.size", 1, MAX_REGION_BYTES),
            "device": _int(v.get("device", MIN_DEVICE), f"{name}.device", MIN_DEVICE, MAX_DEVICE)}


def _ring(v, name):
    v = _map(v, name)
    unknown = sorted(set(v) - {"backend", "slots", "inputs", "outputs", "sync", "output_format"})
    if unknown:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{name}: unknown field(s) {', '.join(map(str, unknown))}")
    backend = _str(v.get("backend"), f"{name}.backend", choices=BACKENDS)
    slots = _int(v.get("slots"), f"{name}.slots", MIN_SLOTS, MAX_SLOTS)
    regions = {}
    for side in ("inputs", "outputs"):
        items = v.get(side)
        if not isinstance(items, list) or len(items) != slots:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"{name}.{side} must list one region per slot ({slots})")
        regions[side] = [_region(x, f"{name}.{side}[{i}]", backend) for i, x in enumerate(items)]
    sync = _map(v.get("sync"), f"{name}.sync")
    if backend == "shm":
        if set(sync) != {"handle", "offset"}:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"{name}.sync must have exactly handle and offset for shm")
        sync = {"handle": _str(sync["handle"], f"{name}.sync.handle", MAX_SHM_NAME_CHARS),
                "offset": _int(sync["offset"], f"{name}.sync.offset", 0, MAX_REGION_BYTES)}
    else:
        if set(sync) != {"ready", "done", "released"}:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"{name}.sync must have ready, done and released event lists")
        for k in ("ready", "done", "released"):
            evs = sync[k]
            if not (isinstance(evs, list) and len(evs) == slots and all(isinstance(e, bytes) and len(e) == CUDA_IPC_HANDLE_BYTES for e in evs)):
                raise ProtocolError(ErrorCode.BAD_FIELD, f"{name}.sync.{k} must list one 64-byte event handle per slot")
    fmt = _str(v.get("output_format", "rgba8"), f"{name}.output_format", choices=OUTPUT_FORMATS)
    return {"backend": backend, "slots": slots, "inputs": regions["inputs"], "outputs": regions["outputs"],
            "sync": sync, "output_format": fmt}


def _req(v, name):
    return _int(v, name, 0, MAX_ID)


@dataclass(frozen=True)
class Hello(Message):
    TYPE: ClassVar[str] = "hello"
    FIELDS: ClassVar[dict] = {"protocol": (True, lambda v, n: _int(v, n, 0, MAX_HELLO_PROTOCOL)),
                              "client": (False, lambda v, n: _str(v, n, MAX_CLIENT_NAME_CHARS)), "req": (False, _req)}
    protocol: int = PROTOCOL_VERSION
    client: str | None = None
    req: int | None = None


@dataclass(frozen=True)
class Open(Message):
    TYPE: ClassVar[str] = "open"
    FIELDS: ClassVar[dict] = {
        "req": (True, _req), "width": (True, lambda v, n: _dimension(v, n, MIN_WIDTH, MAX_WIDTH)),
        "height": (True, lambda v, n: _dimension(v, n, MIN_HEIGHT, MAX_HEIGHT)), "layout": (True, _map), "ring": (True, _ring),
        "prompt": (False, _prompt), "params": (False, _params), "seed": (False, lambda v, n: _int(v, n, MIN_SEED, MAX_SEED)),
        "doorbell": (False, lambda v, n: _str(v, n, MAX_SHM_NAME_CHARS))}
    req: int = 0
    width: int = 0
    height: int = 0
    layout: dict = field(default_factory=dict)
    ring: dict = field(default_factory=dict)
    prompt: Any = None
    params: dict | None = None
    seed: int | None = None
    doorbell: str | None = None  # a doorbell segment's name (interop/doorbell.py)


@dataclass(frozen=True)
class Frame(Message):
    TYPE: ClassVar[str] = "frame"
    FIELDS: ClassVar[dict] = {
        "session": (True, lambda v, n: _int(v, n, 1, MAX_ID)), "seq": (True, lambda v, n: _int(v, n, 1, MAX_ID)),
        "slot": (True, lambda v, n: _int(v, n, 0, MAX_SLOTS - 1)),
        "view": (False, lambda v, n: _floats(v, n, MATRIX_NUMBERS)), "proj": (False, lambda v, n: _floats(v, n, MATRIX_NUMBERS)),
        "jitter": (False, lambda v, n: _floats(v, n, JITTER_NUMBERS)), "dt": (False, lambda v, n: _num(v, n, 0.0, MAX_DT_S)),
        "params": (False, _params)}
    session: int = 0
    seq: int = 0
    slot: int = 0
    view: tuple | None = None
    proj: tuple | None = None
    jitter: tuple | None = None
    dt: float | None = None
    params: dict | None = None


@dataclass(frozen=True)
class SetPrompt(Message):
    TYPE: ClassVar[str] = "prompt"
    FIELDS: ClassVar[dict] = {"req": (True, _req), "session": (True, lambda v, n: _int(v, n, 1, MAX_ID)),
                              "prompt": (True, _prompt), "blend_frames": (False, lambda v, n: _int(v, n, 0, MAX_BLEND_FRAMES))}
    req: int = 0
    session: int = 0
    prompt: Any = None
    blend_frames: int | None = None


@dataclass(frozen=True)
class SetParams(Message):
    TYPE: ClassVar[str] = "params"
    FIELDS: ClassVar[dict] = {"req": (True, _req), "session": (True, lambda v, n: _int(v, n, 1, MAX_ID)),
                              "params": (True, _params)}
    req: int = 0
    session: int = 0
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Stats(Message):
    TYPE: ClassVar[str] = "stats"
    FIELDS: ClassVar[dict] = {"req": (True, _req), "session": (False, lambda v, n: _int(v, n, 1, MAX_ID))}
    req: int = 0
    session: int | None = None


@dataclass(frozen=True)
class Heartbeat(Message):
    TYPE: ClassVar[str] = "heartbeat"
    FIELDS: ClassVar[dict] = {"time": (False, lambda v, n: _num(v, n))}
    time: float | None = None


@dataclass(frozen=True)
class Close(Message):
    TYPE: ClassVar[str] = "close"
    FIELDS: ClassVar[dict] = {"req": (True, _req), "session": (True, lambda v, n: _int(v, n, 1, MAX_ID))}
    req: int = 0
    session: int = 0


def _preset_name(v, name):
    _str(v, name, MAX_PRESET_NAME_CHARS)
    if not re.fullmatch(PRESET_NAME_PATTERN, v):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{name} must be 1 to {MAX_PRESET_NAME_CHARS} characters of "
                                                 f"{PRESET_NAME_PATTERN}")
    return v


@dataclass(frozen=True)
class UsePreset(Message):
    """Switch a session to a named look of the service's presets file (prompt or blend, steps,
    strength, blend_frames); `unknown_preset` if it has none of that name."""
    TYPE: ClassVar[str] = "preset"
    FIELDS: ClassVar[dict] = {"req": (True, _req), "session": (True, lambda v, n: _int(v, n, 1, MAX_ID)),
                              "name": (True, _preset_name)}
    req: int = 0
    session: int = 0
    name: str = ""


@dataclass(frozen=True)
class SavePreset(Message):
    """Save the session's current look (prompt, steps, strength) under `name` in the presets
    file, replacing one of that name; `no_presets_file` if the service was started without one."""
    TYPE: ClassVar[str] = "save_preset"
    FIELDS: ClassVar[dict] = {"req": (True, _req), "session": (True, lambda v, n: _int(v, n, 1, MAX_ID)),
                              "name": (True, _preset_name)}
    req: int = 0
    session: int = 0
    name: str = ""


def _bool(v, name):
    if not isinstance(v, bool):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{name} must be true or false")
    return v


@dataclass(frozen=True)
class Record(Message):
    """Start (`on` true) or stop recording the session in the service's `recordings_dir`: `what`
    is its output as an MP4, its inputs as a capture (docs/capture-format.md), or both (None:
    the output when starting, everything being recorded when stopping)."""
    TYPE: ClassVar[str] = "record"
    FIELDS: ClassVar[dict] = {"req": (True, _req), "session": (True, lambda v, n: _int(v, n, 1, MAX_ID)),
                              "on": (True, _bool), "what": (False, lambda v, n: _str(v, n, choices=RECORD_WHAT))}
    req: int = 0
    session: int = 0
    on: bool = False
    what: str | None = None


REQUESTS = {m.TYPE: m for m in (Hello, Open, Frame, SetPrompt, SetParams, Stats, Heartbeat, Close, UsePreset, SavePreset,
                                Record)}


def parse_message(raw: dict) -> Message:
    """A map from `decode_raw` into a validated message, or ProtocolError carrying the map's
    context."""
    cls = REQUESTS.get(raw["type"])
    if cls is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {raw['type'][:40]!r}; "
                                                     f"known: {', '.join(REQUESTS)}", context_of(raw))
    try:
        return cls.parse(raw)
    except ProtocolError as exc:
        exc.context = context_of(raw)
        raise


def parse_request(data: bytes) -> Message:
    """Engine -> service bytes into a validated message, or ProtocolError."""
    return parse_message(decode_raw(data))


def error_reply(code: str, message: str, **context) -> dict:
    return {"type": "error", "code": code, "message": message, **{k: v for k, v in context.items() if v is not None}}
