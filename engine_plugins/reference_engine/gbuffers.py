"""Rendered frames into an engine's G-buffer formats: what a game writes into its frame slot.

`to_planes` converts a `RenderedFrame` into the planes a `GBufferLayout` describes (formats,
encodings, shared planes), so the reference engine feeds the service exactly as a real engine
would; `to_slot` writes them into a slot's bytes.
"""

from __future__ import annotations

import numpy as np
import torch

from ...interop.layout import FORMATS, GBufferLayout, torch_dtype
from .render import RenderedFrame


def _source(frame: RenderedFrame, name: str, encoding: str, width: int, height: int) -> torch.Tensor:
    if name == "color":
        return frame.color_hdr if encoding == "linear_hdr" else frame.color
    if name == "normals":
        return frame.normals * 0.5 + 0.5 if encoding == "unorm" else frame.normals
    if name == "motion":
        m = frame.motion
        if encoding == "uv":
            return m / torch.tensor([width, height], dtype=m.dtype, device=m.device)
        if encoding == "ndc":
            return m / torch.tensor([width / 2.0, -height / 2.0], dtype=m.dtype, device=m.device)
        return m
    if name == "surface":
        return frame.surface_pos
    return getattr(frame, name)


def to_planes(frame: RenderedFrame, layout: GBufferLayout) -> dict[str, torch.Tensor]:
    """{channel: [H, W, format components]} in the layout's dtypes; channels that share a plane
    share one tensor. Unused components (alpha) are 1 for float formats and 255 for unorm."""
    h, w = frame.depth.shape[:2]
    planes: dict[int, torch.Tensor] = {}
    out = {}
    for ch in layout.channels:
        fmt = FORMATS[ch.format]
        dtype, comps, unorm = torch_dtype(fmt.dtype), fmt.components, fmt.unorm
        plane = planes.get(ch.offset)
        if plane is None:
            fill = 255 if unorm else (0 if fmt.dtype == "uint32" else 1)
            plane = torch.full((h, w, comps), fill, dtype=dtype, device=frame.depth.device)
            planes[ch.offset] = plane
        src = _source(frame, ch.name, ch.resolved_encoding, w, h)
        if unorm:
            src = torch.round(src.clamp(0, 1) * 255)
        plane[..., ch.first:ch.first + ch.components] = src.to(dtype)
        out[ch.name] = plane
    return out


def to_slot(frame: RenderedFrame, layout: GBufferLayout, slot=None) -> torch.Tensor:
    """The frame written into a slot's bytes: a torch tensor ([N] uint8, a CUDA ring's slot), a
    shared-memory ring's numpy slot (viewed as a tensor, no copy), or allocated when not given."""
    h, w = frame.depth.shape[:2]
    if slot is None:
        slot = torch.zeros(layout.slot_bytes(w, h), dtype=torch.uint8, device=frame.depth.device)
    elif not isinstance(slot, torch.Tensor):
        slot = torch.from_numpy(np.asarray(slot))
    views = layout.view(slot, w, h)
    for name, plane in to_planes(frame, layout).items():
        views[name].copy_(plane)
    return slot
