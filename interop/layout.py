"""G-buffer layout as data: which named channels a frame carries, in which format, where. Part of
the engine contract, torch-free (numpy only).

An engine describes its frame slot once, when a session opens: a list of channels, each a semantic
name (color, depth, normals, ...), a pixel format, the components of that format it uses, and where
its plane lies in the slot (byte offset, row pitch). Two channels may share a plane (roughness and
metallic packed in one RG8 target). Nothing about a particular engine is code.

What must hold after `validate`: every channel the model needs is present once; every format and
encoding is known and fits its semantic channel; every plane lies inside the slot and planes that
share an offset agree on format and pitch. `view_numpy` then turns a slot's bytes into per-channel
numpy arrays without copying (`view` does the same for a torch tensor, for a CUDA ring; torch is
imported only then). The model's normalisation of each channel (`pack_specs`) lives in
`model.layout`, on top of these tables.

The tables (`SEMANTIC_CHANNELS`, `FORMATS` with dtype names and bytes per component, `ENCODINGS`)
are the only copy: docs/gbuffer-layout.md is tested against them, and the C header is generated
from them. Values are little-endian.

Conventions (documented for plugin authors in docs/gbuffer-layout.md):
- depth is linear view-space distance in scene units, larger is farther;
- motion is the offset from a pixel's position in this frame to the same surface point's position in
  the previous frame (Unreal's velocity convention: current to previous), in pixels, UV units or NDC;
- normals are world-space unit vectors, stored signed (float) or as unorm (n * 0.5 + 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from .errors import InputError, LayoutError
from .limits import OUTPUT_BYTES_PER_PIXEL, OUTPUT_FORMATS

# Semantic channels: name -> number of components the model reads.
SEMANTIC_CHANNELS: dict[str, int] = {
    "color": 3, "depth": 1, "normals": 3, "albedo": 3, "roughness": 1, "metallic": 1,
    "motion": 2, "ids": 1, "surface": 3,
}

# Component types: numpy dtype name -> bytes. (Torch has no full uint32: its views use int32.)
DTYPE_BYTES: dict[str, int] = {"uint8": 1, "float16": 2, "float32": 4, "uint32": 4}


class Format(NamedTuple):
    dtype: str  # a DTYPE_BYTES name
    components: int  # per pixel
    unorm: bool  # integer-normalised: divided by 255 to [0, 1]

    @property
    def component_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def pixel_bytes(self) -> int:
        return self.components * DTYPE_BYTES[self.dtype]


# Pixel formats: name -> (dtype name, components per pixel, integer-normalised?).
FORMATS: dict[str, Format] = {
    "r8_unorm": Format("uint8", 1, True),
    "rg8_unorm": Format("uint8", 2, True),
    "rgba8_unorm": Format("uint8", 4, True),
    "r16f": Format("float16", 1, False),
    "rg16f": Format("float16", 2, False),
    "rgba16f": Format("float16", 4, False),
    "r32f": Format("float32", 1, False),
    "rg32f": Format("float32", 2, False),
    "rgba32f": Format("float32", 4, False),
    "r32_uint": Format("uint32", 1, False),
}

# Encodings each semantic channel may declare; the first is the default.
ENCODINGS: dict[str, tuple[str, ...]] = {
    "color": ("display", "linear_hdr"),  # display: already tone-mapped [0, 1]; linear_hdr: scene-referred
    "depth": ("linear",),
    "normals": ("signed", "unorm"),
    "albedo": ("unit",),
    "roughness": ("unit",),
    "metallic": ("unit",),
    "motion": ("pixels", "uv", "ndc"),
    "ids": ("uint",),
    # surface: the shaded point's position in its object's own frame (world units), so that it
    # stays put on a moving object; engines without one leave the channel out.
    "surface": ("object",),
}

REQUIRED_FOR_WARP = ("depth", "motion")
REFERENCE_PLANE_ALIGN = 256  # reference_layout's planes start on this boundary

CHANNEL_FIELDS = ("name", "format", "offset", "row_pitch", "first", "encoding", "depth_range", "exposure")


def numpy_dtype(name: str) -> np.dtype:
    return np.dtype(name).newbyteorder("<")


def torch_dtype(name: str):
    """The torch dtype of a component type (uint32 is viewed as int32). Imports torch."""
    import torch

    return {"uint8": torch.uint8, "float16": torch.float16, "float32": torch.float32, "uint32": torch.int32}[name]


def output_bytes(width: int, height: int, fmt: str) -> int:
    """Bytes of one frame in an output format (at the start of its output slot)."""
    if fmt not in OUTPUT_BYTES_PER_PIXEL:
        raise ValueError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, not {fmt!r}")
    return width * height * OUTPUT_BYTES_PER_PIXEL[fmt]


def output_view_numpy(buffer, width: int, height: int, fmt: str) -> np.ndarray:
    """An output slot's first frame as [H, W, 4] uint8 (rgba8) or float16 (rgba16f), no copy."""
    raw = _as_bytes_array(buffer)
    need = output_bytes(width, height, fmt)
    if raw.size < need:
        raise InputError(f"the output slot holds {raw.size} bytes; {width}x{height} {fmt} needs {need}")
    dtype = numpy_dtype("uint8" if fmt == "rgba8" else "float16")
    return raw[:need].view(dtype).reshape(height, width, 4)


def _as_bytes_array(buffer) -> np.ndarray:
    """A buffer (numpy array, memoryview, bytearray, mmap) as a 1-D uint8 array over the same bytes."""
    if isinstance(buffer, np.ndarray):
        if buffer.dtype != np.uint8 or buffer.ndim != 1 or not buffer.flags.c_contiguous:
            raise InputError("a frame slot must be a contiguous 1-D uint8 array")
        return buffer
    try:
        return np.frombuffer(buffer, dtype=np.uint8)
    except (TypeError, ValueError):
        raise InputError(f"a frame slot must be a byte buffer, not {type(buffer).__name__}") from None


def _is_torch(buffer) -> bool:
    return type(buffer).__module__.split(".")[0] == "torch"


@dataclass(frozen=True)
class Channel:
    name: str
    format: str
    offset: int = 0  # byte offset of the plane inside the slot
    row_pitch: int = 0  # bytes from one row to the next; 0 means tightly packed
    first: int = 0  # first component of the format this channel uses
    encoding: str = ""  # "" picks the channel's default encoding
    depth_range: tuple[float, float] = (0.1, 1000.0)  # near, far for depth normalisation
    exposure: float = 1.0  # multiplies linear_hdr color before tone mapping

    @property
    def components(self) -> int:
        return SEMANTIC_CHANNELS.get(self.name, 0)

    @property
    def resolved_encoding(self) -> str:
        return self.encoding or ENCODINGS.get(self.name, ("",))[0]

    def pixel_bytes(self) -> int:
        return FORMATS[self.format].pixel_bytes

    def pitch(self, width: int) -> int:
        return self.row_pitch or width * self.pixel_bytes()

    def plane_end(self, width: int, height: int) -> int:
        return self.offset + self.pitch(width) * (height - 1) + width * self.pixel_bytes()


@dataclass(frozen=True)
class GBufferLayout:
    channels: tuple[Channel, ...] = field(default_factory=tuple)

    def __getitem__(self, name: str) -> Channel:
        for ch in self.channels:
            if ch.name == name:
                return ch
        raise LayoutError(f"layout has no channel {name!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(ch.name for ch in self.channels)

    def validate(self, required: Sequence[str] = (), width: int | None = None,
                 height: int | None = None, slot_bytes: int | None = None) -> "GBufferLayout":
        """Check the layout; raise `LayoutError` naming every problem found."""
        problems: list[str] = []
        seen: set[str] = set()
        if not self.channels:
            problems.append("the layout has no channels")
        for ch in self.channels:
            where = f"channel {ch.name!r}"
            if ch.name not in SEMANTIC_CHANNELS:
                problems.append(f"{where}: unknown channel name (known: {', '.join(SEMANTIC_CHANNELS)})")
                continue
            if ch.name in seen:
                problems.append(f"{where}: appears twice")
            seen.add(ch.name)
            if ch.format not in FORMATS:
                problems.append(f"{where}: unknown format {ch.format!r} (known: {', '.join(FORMATS)})")
                continue
            fmt = FORMATS[ch.format]
            if not (isinstance(ch.first, int) and 0 <= ch.first) or ch.first + ch.components > fmt.components:
                problems.append(f"{where}: needs {ch.components} components from component {ch.first}, "
                                f"but {ch.format} has {fmt.components}")
            if ch.resolved_encoding not in ENCODINGS[ch.name]:
                problems.append(f"{where}: encoding {ch.encoding!r} is not one of {ENCODINGS[ch.name]}")
            if (ch.name == "ids") != (fmt.dtype == "uint32") or (ch.name == "surface" and fmt.unorm):
                problems.append(f"{where}: format {ch.format} does not suit this channel")
            if not (isinstance(ch.offset, int) and ch.offset >= 0):
                problems.append(f"{where}: offset must be a non-negative integer, got {ch.offset!r}")
            elif ch.offset % fmt.component_bytes:
                problems.append(f"{where}: offset {ch.offset} is not aligned to its component size")
            if not (isinstance(ch.row_pitch, int) and ch.row_pitch >= 0):
                problems.append(f"{where}: row_pitch must be a non-negative integer")
            elif width is not None and ch.row_pitch and ch.row_pitch < width * ch.pixel_bytes():
                problems.append(f"{where}: row_pitch {ch.row_pitch} is shorter than a row "
                                f"({width * ch.pixel_bytes()} bytes)")
            elif ch.row_pitch % ch.pixel_bytes():
                problems.append(f"{where}: row_pitch {ch.row_pitch} is not a whole number of pixels")
            near, far = ch.depth_range
            if not (math.isfinite(near) and math.isfinite(far) and 0 < near < far):
                problems.append(f"{where}: depth_range must satisfy 0 < near < far, got {ch.depth_range}")
            if not (math.isfinite(ch.exposure) and ch.exposure > 0):
                problems.append(f"{where}: exposure must be positive and finite")
        missing = [name for name in required if name not in seen]
        if missing:
            problems.append(f"missing channels the model needs: {', '.join(missing)}")
        if not problems and width is not None and height is not None:
            problems += self._check_planes(width, height, slot_bytes)
        if problems:
            raise LayoutError("invalid G-buffer layout: " + "; ".join(problems))
        return self

    def _check_planes(self, width: int, height: int, slot_bytes: int | None) -> list[str]:
        problems = []
        by_offset: dict[int, Channel] = {}
        for ch in self.channels:
            other = by_offset.setdefault(ch.offset, ch)
            if other is not ch and (other.format, other.pitch(width)) != (ch.format, ch.pitch(width)):
                problems.append(f"channels {other.name!r} and {ch.name!r} share offset {ch.offset} "
                                "but not format and pitch")
            if slot_bytes is not None and ch.plane_end(width, height) > slot_bytes:
                problems.append(f"channel {ch.name!r}: plane ends at byte {ch.plane_end(width, height)}, "
                                f"past the slot's {slot_bytes} bytes")
        planes = sorted({(c.offset, c.plane_end(width, height)) for c in self.channels})
        for (a0, a1), (b0, b1) in zip(planes, planes[1:]):
            if b0 < a1:
                problems.append(f"planes at offsets {a0} and {b0} overlap")
        return problems

    def __reduce__(self):
        # Pickles and copies carry the channels only: the remembered hash (of strings, salted per
        # process) and sizes below are this object's, never another process's.
        return (GBufferLayout, (self.channels,))

    def __hash__(self) -> int:
        # Computed once per layout (a layout keys the service's graphs, looked up every frame).
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash(self.channels)
            object.__setattr__(self, "_hash", h)
        return h

    def slot_bytes(self, width: int, height: int) -> int:
        """Smallest slot that holds every plane at this size (remembered per size: `check_slot`
        runs on every frame, on the host while the device waits)."""
        memo = self.__dict__.get("_slot_bytes")
        if memo is None or len(memo) > 64:
            memo = {}
            object.__setattr__(self, "_slot_bytes", memo)
        n = memo.get((width, height))
        if n is None:
            n = memo[(width, height)] = max(ch.plane_end(width, height) for ch in self.channels)
        return n

    def check_slot(self, slot, width: int, height: int) -> None:
        """Raise InputError unless `slot` is a contiguous 1-D uint8 buffer (a torch tensor, a numpy
        array, or any object with the buffer protocol) of at least `slot_bytes(width, height)`."""
        if _is_torch(slot):
            import torch

            if not isinstance(slot, torch.Tensor) or slot.dtype != torch.uint8 or slot.dim() != 1 \
                    or not slot.is_contiguous():
                raise InputError("a frame slot must be a contiguous 1-D uint8 tensor")
            have = slot.numel()
        else:
            have = _as_bytes_array(slot).size
        need = self.slot_bytes(width, height)
        if have < need:
            raise InputError(f"frame slot holds {have} bytes; this layout needs {need} at {width}x{height}")

    def view_numpy(self, buffer, width: int, height: int) -> dict[str, np.ndarray]:
        """Per-plane numpy arrays over a slot's bytes, without copying.

        buffer: a contiguous uint8 array or any byte buffer. Returns {channel name: [H, W, format
        components]} in the format's dtype (writable when the buffer is); channels that share a
        plane share the array's memory (select components with `first`).
        """
        raw = _as_bytes_array(buffer)
        self.check_slot(raw, width, height)
        out = {}
        for ch in self.channels:
            fmt = FORMATS[ch.format]
            esize = fmt.component_bytes
            out[ch.name] = np.ndarray((height, width, fmt.components), dtype=numpy_dtype(fmt.dtype), buffer=raw,
                                      offset=ch.offset, strides=(ch.pitch(width), fmt.pixel_bytes, esize))
        return out

    def view(self, slot, width: int, height: int) -> dict:
        """Per-plane views of a slot, without copying: torch tensors for a torch tensor (a CUDA ring's
        slot; [N] uint8, contiguous), numpy arrays (`view_numpy`) for anything else."""
        if not _is_torch(slot):
            return self.view_numpy(slot, width, height)
        self.check_slot(slot, width, height)
        out = {}
        for ch in self.channels:
            fmt = FORMATS[ch.format]
            esize = fmt.component_bytes
            # A uint8 view of a byte range reinterpreted as `dtype` needs the range's length to be a
            # whole number of elements; plane_end guarantees it.
            typed = slot[ch.offset:ch.plane_end(width, height)].view(torch_dtype(fmt.dtype))
            out[ch.name] = typed.as_strided((height, width, fmt.components),
                                            (ch.pitch(width) // esize, fmt.components, 1))
        return out

    def motion_scale(self, width: int, height: int) -> tuple[float, float]:
        """Factors that turn raw motion components into pixels (x right, y down)."""
        ch = self["motion"]
        enc = ch.resolved_encoding
        if enc == "uv":
            return float(width), float(height)
        if enc == "ndc":  # NDC y points up, pixel rows go down
            return width / 2.0, -height / 2.0
        return 1.0, 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"channels": [
            {"name": c.name, "format": c.format, "offset": c.offset, "row_pitch": c.row_pitch,
             "first": c.first, "encoding": c.resolved_encoding, "depth_range": list(c.depth_range),
             "exposure": c.exposure}
            for c in self.channels]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GBufferLayout":
        """Build from plain data (JSON or msgpack); malformed data raises `LayoutError`."""
        if not isinstance(data, Mapping) or not isinstance(data.get("channels"), (list, tuple)):
            raise LayoutError("a layout is a mapping with a 'channels' list")
        extra = sorted(set(data) - {"channels"}, key=str)
        if extra:  # a misspelt or newer key would otherwise be ignored without a word
            raise LayoutError(f"a layout has only 'channels'; unknown key(s) {', '.join(map(str, extra))}")
        allowed = set(CHANNEL_FIELDS)
        channels = []
        for i, item in enumerate(data["channels"]):
            if not isinstance(item, Mapping):
                raise LayoutError(f"layout channel {i} is not a mapping")
            unknown = sorted(set(item) - allowed, key=str)
            if unknown:
                raise LayoutError(f"layout channel {i}: unknown fields {', '.join(map(str, unknown))}")
            if not isinstance(item.get("name"), str) or not isinstance(item.get("format"), str):
                raise LayoutError(f"layout channel {i}: 'name' and 'format' must be strings")
            kwargs = dict(item)
            if "depth_range" in kwargs:
                rng = kwargs["depth_range"]
                if not (isinstance(rng, (list, tuple)) and len(rng) == 2
                        and all(isinstance(v, (int, float)) for v in rng)):
                    raise LayoutError(f"layout channel {i}: depth_range must be two numbers")
                kwargs["depth_range"] = (float(rng[0]), float(rng[1]))
            for key in ("offset", "row_pitch", "first"):
                if key in kwargs and (not isinstance(kwargs[key], int) or isinstance(kwargs[key], bool)):
                    raise LayoutError(f"layout channel {i}: {key} must be an integer")
            if "exposure" in kwargs and not isinstance(kwargs["exposure"], (int, float)):
                raise LayoutError(f"layout channel {i}: exposure must be a number")
            if "encoding" in kwargs and not isinstance(kwargs["encoding"], str):
                raise LayoutError(f"layout channel {i}: encoding must be a string")
            channels.append(Channel(**kwargs))
        return cls(tuple(channels)).validate()


def reference_layout(width: int, height: int, depth_range: tuple[float, float] = (0.1, 1000.0),
                     surface: bool = False) -> GBufferLayout:
    """The layout the reference engine writes: planes back to back in one slot.

    color RGBA16F (linear HDR), depth R32F, normals RGBA16F (signed), albedo RGBA8, roughness and
    metallic sharing one RG8 plane, motion RG16F in pixels, object ids R32_UINT; with `surface`,
    the optional object-space surface position as RGBA16F after them (training and evaluation use
    it; the engine-side examples and benchmarks keep the smaller slot without it).
    """
    spec = [("color", "rgba16f", 0, "linear_hdr"), ("depth", "r32f", 0, "linear"),
            ("normals", "rgba16f", 0, "signed"), ("albedo", "rgba8_unorm", 0, "unit"),
            ("roughness", "rg8_unorm", 0, "unit"), ("metallic", "rg8_unorm", 1, "unit"),
            ("motion", "rg16f", 0, "pixels"), ("ids", "r32_uint", 0, "uint")]
    if surface:
        spec.append(("surface", "rgba16f", 0, "object"))
    channels, offset, last_plane = [], 0, None
    for name, fmt, first, enc in spec:
        if first and last_plane is not None:  # shares the previous channel's plane
            channels.append(Channel(name, fmt, offset=last_plane, first=first, encoding=enc))
            continue
        ch = Channel(name, fmt, offset=offset, first=first, encoding=enc, depth_range=depth_range)
        channels.append(ch)
        last_plane = offset
        end = ch.plane_end(width, height)
        offset = (end + REFERENCE_PLANE_ALIGN - 1) // REFERENCE_PLANE_ALIGN * REFERENCE_PLANE_ALIGN
    return GBufferLayout(tuple(channels)).validate(width=width, height=height)
