"""The capture format: sequences of G-buffer frames, with optional style targets, on disk.

A capture is a folder: `manifest.json` plus chunk files `chunk-000000.safetensors`, ... Each chunk
holds up to `chunk_frames` consecutive frames: every G-buffer plane in the engine's own format (as
its `GBufferLayout` describes), any extra buffers, the style targets (RGB8) and per-frame metadata
(time, camera matrices, jitter, cut flag, and an optional JSON record per frame: the service's
recorder puts the frame's seq, dt, prompt and parameters there). docs/capture-format.md is the
specification.

What must hold:
- Writing streams: frames are buffered only up to one chunk; each chunk is written to a temporary
  name and renamed, then the manifest is rewritten the same way, so a crash leaves a valid capture
  holding every completed chunk.
- Reading streams: one frame is read at a time through safetensors slices; a chunk is verified
  (size, SHA-256) the first time it is touched. A missing, truncated or corrupted chunk raises
  `ChunkError` naming it; with `skip_damaged=True` iteration carries on with the other chunks and
  records the damage, so no readable frame is lost.
- A manifest from another format or a newer version is refused with `CaptureVersionError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..interop.errors import ErrorCode, StreamStyleError
from ..interop.layout import FORMATS, GBufferLayout, torch_dtype

FORMAT_NAME = "streamstyle-capture"
VERSION = 1
MANIFEST = "manifest.json"
CHUNK_TARGET_BYTES = 64 << 20
INFO_KEY = "streamstyle.frames"  # a chunk header's metadata entry: JSON list, one object per frame

DEFAULT_CONVENTIONS = {
    "motion": "current_to_previous",  # offset from this frame's pixel to the same point last frame
    "depth": "linear_view_distance",
    "normals": "world",
    "world": "right_handed_y_up",
    "camera": "looks_down_negative_z",
    "ndc": "opengl",
    "pixel_centers": "integer",
    "rows": "top_down",
}

DTYPES = {"float16": torch.float16, "float32": torch.float32, "uint8": torch.uint8, "int32": torch.int32}


class CaptureError(StreamStyleError):
    code = ErrorCode.BAD_CAPTURE


class CaptureVersionError(CaptureError):
    code = ErrorCode.CAPTURE_VERSION


class ChunkError(CaptureError):
    code = ErrorCode.BAD_CHUNK

    def __init__(self, chunk: str, message: str):
        super().__init__(f"{chunk}: {message}")
        self.chunk = chunk


@dataclass
class FrameMeta:
    time: float = 0.0
    cut: bool = False
    view: torch.Tensor = field(default_factory=lambda: torch.eye(4))
    proj: torch.Tensor = field(default_factory=lambda: torch.eye(4))
    jitter: tuple[float, float] = (0.0, 0.0)
    info: dict | None = None  # JSON-able facts about the frame (the service's recorder: seq, dt, prompt, params)


@dataclass
class CaptureFrame:
    index: int
    planes: dict[str, torch.Tensor]  # {channel: [H, W, format components]}, shared planes shared
    extras: dict[str, torch.Tensor]  # {name: [H, W, C]}
    targets: dict[str, torch.Tensor]  # {style: [H, W, 3] uint8}
    meta: FrameMeta


def _plane_owners(layout: GBufferLayout) -> dict[int, str]:
    """Offset -> the first channel at that offset, which names the stored plane."""
    owners: dict[int, str] = {}
    for ch in layout.channels:
        owners.setdefault(ch.offset, ch.name)
    return owners


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class CaptureWriter:
    """Appends frames to a new capture folder. Use as a context manager, or call `close`."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float, layout: GBufferLayout,
                 extras: Mapping[str, tuple[str, int]] | None = None, styles: Mapping[str, list[str]] | None = None,
                 engine: Mapping[str, Any] | None = None, camera: Mapping[str, Any] | None = None,
                 conventions: Mapping[str, str] | None = None, chunk_frames: int | None = None):
        self.path = Path(path)
        if (self.path / MANIFEST).exists():
            raise CaptureError(f"{self.path} already holds a capture; choose a new folder")
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise CaptureError(f"frame size must be positive integers, got {width}x{height}")
        if not (isinstance(fps, (int, float)) and fps > 0):
            raise CaptureError(f"fps must be positive, got {fps!r}")
        layout.validate(width=width, height=height)
        self.path.mkdir(parents=True, exist_ok=True)
        self.width, self.height, self.layout = width, height, layout
        self.extras = {k: (v[0], int(v[1])) for k, v in (extras or {}).items()}
        for name, (dt, c) in self.extras.items():
            if dt not in DTYPES or c < 1:
                raise CaptureError(f"extra buffer {name!r}: dtype must be one of {', '.join(DTYPES)}, channels >= 1")
        self.styles = {k: list(v) for k, v in (styles or {}).items()}
        frame_bytes = layout.slot_bytes(width, height) + width * height * 3 * len(self.styles) + sum(
            width * height * c * DTYPES[dt].itemsize for dt, c in self.extras.values())
        self.chunk_frames = chunk_frames or max(1, min(256, CHUNK_TARGET_BYTES // max(1, frame_bytes)))
        self.manifest = {
            "format": FORMAT_NAME, "version": VERSION,
            "width": width, "height": height, "fps": float(fps), "frames": 0,
            "chunk_frames": self.chunk_frames,
            "layout": layout.to_dict(),
            "planes": sorted(set(_plane_owners(layout).values())),
            "extras": {k: {"dtype": dt, "channels": c} for k, (dt, c) in self.extras.items()},
            "styles": self.styles,
            "conventions": dict(conventions or DEFAULT_CONVENTIONS),
            "camera": dict(camera or {}),
            "engine": dict(engine or {}),
            "chunks": [],
        }
        self._pending: list[tuple[dict, dict, dict, FrameMeta]] = []
        self._closed = False
        _atomic_write(self.path / MANIFEST, json.dumps(self.manifest, indent=2))

    @property
    def frames(self) -> int:
        return self.manifest["frames"] + len(self._pending)

    def append(self, planes: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor] | None = None,
               extras: Mapping[str, torch.Tensor] | None = None, meta: FrameMeta | None = None) -> None:
        """Add one frame. planes: {channel: [H, W, format components]} (as `GBufferLayout.view`
        or `reference_engine.gbuffers.to_planes` give); targets: {style: [H, W, 3] uint8}."""
        if self._closed:
            raise CaptureError("the capture is closed")
        h, w = self.height, self.width
        owners = _plane_owners(self.layout)
        stored = {}
        for offset, name in owners.items():
            if name not in planes:
                raise CaptureError(f"frame lacks plane {name!r}")
            fmt = FORMATS[self.layout[name].format]
            dtype, comps = torch_dtype(fmt.dtype), fmt.components
            x = planes[name]
            if tuple(x.shape) != (h, w, comps) or x.dtype != dtype:
                raise CaptureError(f"plane {name!r} is {tuple(x.shape)} {x.dtype}; the layout says {(h, w, comps)} {dtype}")
            stored[name] = x.detach().to("cpu", copy=True).contiguous()
        tg = {}
        for style, x in (targets or {}).items():
            if style not in self.styles:
                raise CaptureError(f"target {style!r} is not one of this capture's styles ({', '.join(self.styles) or 'none'})")
            if tuple(x.shape) != (h, w, 3) or x.dtype != torch.uint8:
                raise CaptureError(f"target {style!r} must be [{h}, {w}, 3] uint8, got {tuple(x.shape)} {x.dtype}")
            tg[style] = x.detach().to("cpu", copy=True).contiguous()
        if set(tg) != set(self.styles) and tg:
            raise CaptureError(f"a frame's targets must cover every style or none; missing {sorted(set(self.styles) - set(tg))}")
        ex = {}
        for name, (dt, c) in self.extras.items():
            x = (extras or {}).get(name)
            if x is None or tuple(x.shape) != (h, w, c) or x.dtype != DTYPES[dt]:
                raise CaptureError(f"extra buffer {name!r} must be [{h}, {w}, {c}] {dt}")
            ex[name] = x.detach().to("cpu", copy=True).contiguous()
        if meta is not None and meta.info is not None:
            try:
                json.dumps(meta.info, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise CaptureError(f"a frame's info must be a JSON object: {exc}") from None
            if not isinstance(meta.info, dict):
                raise CaptureError(f"a frame's info must be a JSON object, not {type(meta.info).__name__}")
        self._pending.append((stored, tg, ex, meta or FrameMeta()))
        if len(self._pending) >= self.chunk_frames:
            self.flush()

    def flush(self) -> None:
        """Write the buffered frames as one chunk and commit it to the manifest."""
        if not self._pending:
            return
        index = len(self.manifest["chunks"])
        name = f"chunk-{index:06d}.safetensors"
        tensors: dict[str, torch.Tensor] = {}
        frames = self._pending
        for key in frames[0][0]:
            tensors[f"plane.{key}"] = torch.stack([f[0][key] for f in frames])
        if frames[0][1]:
            for style in self.styles:
                tensors[f"target.{style}"] = torch.stack([f[1][style] for f in frames])
        for key in self.extras:
            tensors[f"extra.{key}"] = torch.stack([f[2][key] for f in frames])
        tensors["meta.time"] = torch.tensor([f[3].time for f in frames], dtype=torch.float64)
        tensors["meta.cut"] = torch.tensor([int(f[3].cut) for f in frames], dtype=torch.uint8)
        tensors["meta.view"] = torch.stack([f[3].view.float().cpu() for f in frames])
        tensors["meta.proj"] = torch.stack([f[3].proj.float().cpu() for f in frames])
        tensors["meta.jitter"] = torch.tensor([list(f[3].jitter) for f in frames], dtype=torch.float32)
        infos = [f[3].info for f in frames]
        metadata = {INFO_KEY: json.dumps([i or {} for i in infos])} if any(infos) else None
        tmp = self.path / (name + ".tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, self.path / name)
        first = self.manifest["frames"]
        self.manifest["chunks"].append({"file": name, "first": first, "count": len(frames),
                                        "targets": bool(frames[0][1]),
                                        "bytes": (self.path / name).stat().st_size, "sha256": _sha256(self.path / name)})
        self.manifest["frames"] = first + len(frames)
        _atomic_write(self.path / MANIFEST, json.dumps(self.manifest, indent=2))
        self._pending = []

    def close(self) -> None:
        if not self._closed:
            self.flush()
            self._closed = True

    def __enter__(self) -> "CaptureWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CaptureReader:
    """Reads a capture frame by frame. `len(reader)` frames; `reader[i]`; iteration."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        mf = self.path / MANIFEST
        if not mf.exists():
            raise CaptureError(f"{self.path} is not a capture: it has no {MANIFEST}")
        try:
            m = json.loads(mf.read_text())
        except json.JSONDecodeError as exc:
            raise CaptureError(f"{mf} is not valid JSON: {exc}") from None
        if not isinstance(m, dict) or m.get("format") != FORMAT_NAME:
            raise CaptureVersionError(f"{mf} is not a {FORMAT_NAME} manifest")
        version = m.get("version")
        if not isinstance(version, int) or version > VERSION or version < 1:
            raise CaptureVersionError(f"{mf} has format version {version!r}; this reader reads versions 1..{VERSION}")
        try:
            self.width, self.height, self.fps = int(m["width"]), int(m["height"]), float(m["fps"])
            self.layout = GBufferLayout.from_dict(m["layout"])
            self.chunks = list(m["chunks"])
            self.frames = int(m["frames"])
            self.styles: dict[str, list[str]] = dict(m.get("styles", {}))
            self.extras = {k: (v["dtype"], int(v["channels"])) for k, v in m.get("extras", {}).items()}
        except (KeyError, TypeError, ValueError, StreamStyleError) as exc:
            raise CaptureError(f"{mf} is malformed: {exc}") from None
        self.manifest = m
        self._verified: dict[str, str | None] = {}  # chunk file -> problem, or None when sound
        self._infos: dict[str, list | None] = {}  # chunk file -> its frames' JSON records, once read
        self.damaged: list[ChunkError] = []

    def __len__(self) -> int:
        return self.frames

    def verify_chunk(self, chunk: Mapping[str, Any]) -> None:
        """Raise ChunkError if the chunk file is missing, truncated or altered."""
        name = chunk["file"]
        if name not in self._verified:
            file = self.path / name
            problem = None
            if not file.exists():
                problem = "missing"
            elif file.stat().st_size != chunk["bytes"]:
                problem = f"truncated or padded: {file.stat().st_size} bytes, the manifest says {chunk['bytes']}"
            elif _sha256(file) != chunk["sha256"]:
                problem = "corrupted: its SHA-256 does not match the manifest"
            self._verified[name] = problem
        if self._verified[name] is not None:
            raise ChunkError(name, self._verified[name])

    def _locate(self, index: int) -> tuple[Mapping[str, Any], int]:
        if not 0 <= index < self.frames:
            raise IndexError(f"frame {index} is outside 0..{self.frames - 1}")
        for c in self.chunks:
            if c["first"] <= index < c["first"] + c["count"]:
                return c, index - c["first"]
        raise CaptureError(f"the manifest lists no chunk for frame {index}")

    def __getitem__(self, index: int) -> CaptureFrame:
        chunk, k = self._locate(index)
        self.verify_chunk(chunk)
        owners = _plane_owners(self.layout)
        try:
            with safe_open(str(self.path / chunk["file"]), framework="pt") as f:
                stored = {name: f.get_slice(f"plane.{name}")[k] for name in set(owners.values())}
                targets = ({s: f.get_slice(f"target.{s}")[k] for s in self.styles} if chunk.get("targets") else {})
                extras = {n: f.get_slice(f"extra.{n}")[k] for n in self.extras}
                if chunk["file"] not in self._infos:
                    raw = (f.metadata() or {}).get(INFO_KEY)
                    self._infos[chunk["file"]] = json.loads(raw) if raw is not None else None
                infos = self._infos[chunk["file"]]
                meta = FrameMeta(time=float(f.get_slice("meta.time")[k]), cut=bool(f.get_slice("meta.cut")[k]),
                                 view=f.get_slice("meta.view")[k], proj=f.get_slice("meta.proj")[k],
                                 jitter=tuple(f.get_slice("meta.jitter")[k].tolist()),
                                 info=(infos[k] or None) if infos is not None else None)
        except Exception as exc:  # a chunk that passed its checksum but does not hold what the manifest says
            raise ChunkError(chunk["file"], f"unreadable: {exc}") from None
        planes = {ch.name: stored[owners[ch.offset]] for ch in self.layout.channels}
        return CaptureFrame(index, planes, extras, targets, meta)

    def iter_frames(self, skip_damaged: bool = False) -> Iterator[CaptureFrame]:
        """Frames in order. A damaged chunk raises ChunkError, or with skip_damaged is recorded in
        `damaged` and its frames skipped."""
        for c in self.chunks:
            try:
                self.verify_chunk(c)
            except ChunkError as exc:
                if not skip_damaged:
                    raise
                self.damaged.append(exc)
                continue
            for i in range(c["first"], c["first"] + c["count"]):
                yield self[i]

    def __iter__(self) -> Iterator[CaptureFrame]:
        return self.iter_frames()

    def slot(self, frame: CaptureFrame) -> torch.Tensor:
        """The frame's planes written into a slot's bytes, as the engine would send them."""
        slot = torch.zeros(self.layout.slot_bytes(self.width, self.height), dtype=torch.uint8)
        views = self.layout.view(slot, self.width, self.height)
        for name, plane in frame.planes.items():
            views[name].copy_(plane)
        return slot
