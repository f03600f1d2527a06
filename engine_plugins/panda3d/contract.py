"""The one place this plugin takes the engine contract from: the G-buffer layout as data.

Everything else in `engine_plugins/panda3d` imports `Channel`, `GBufferLayout` and `FORMATS` from
here, the contract's torch-free layout (interop/layout.py). The
plugin otherwise reaches the service only through the Python client and a ring.

`panda3d_layout` is the slot this plugin writes: what its G-buffer pass renders, plane for plane, so
each render target is copied into the slot as it comes back from the GPU (no repacking):

| plane (rgba16f unless said) | components |
| --- | --- |
| colour | linear HDR colour (rgb), alpha unused |
| geometry | world-space normals (rgb, signed, y up), linear view depth (a) |
| surface | albedo (rgb), roughness (a) |
| motion | motion to the previous frame in pixels (rg, x right, y down), metallic (b), alpha unused |
| ids (r32_uint) | object ids: 0 sky, 1.. one per GeomNode |
"""

from __future__ import annotations

from ...interop.layout import FORMATS, Channel, GBufferLayout

__all__ = ["FORMATS", "Channel", "GBufferLayout", "PLANES", "panda3d_layout"]

# Render-target planes in slot order: name -> bytes per pixel.
PLANES = {"color": 8, "geometry": 8, "surface": 8, "motion": 8, "ids": 4}


def _align(n: int, a: int = 256) -> int:
    return (n + a - 1) // a * a


def plane_offsets(width: int, height: int) -> dict[str, int]:
    """Byte offset of each plane in a slot: back to back, 256-byte aligned."""
    offsets, at = {}, 0
    for name, bpp in PLANES.items():
        offsets[name] = at
        at = _align(at + width * height * bpp)
    return offsets


def panda3d_layout(width: int, height: int, depth_range: tuple[float, float] = (0.1, 1000.0)) -> GBufferLayout:
    """The layout of this plugin's frame slot at `width` x `height` (see the table above)."""
    o = plane_offsets(width, height)
    near, far = float(depth_range[0]), float(depth_range[1])
    channels = (
        Channel("color", "rgba16f", offset=o["color"], encoding="linear_hdr"),
        Channel("normals", "rgba16f", offset=o["geometry"], first=0, encoding="signed"),
        Channel("depth", "rgba16f", offset=o["geometry"], first=3, encoding="linear", depth_range=(near, far)),
        Channel("albedo", "rgba16f", offset=o["surface"], first=0),
        Channel("roughness", "rgba16f", offset=o["surface"], first=3),
        Channel("motion", "rgba16f", offset=o["motion"], first=0, encoding="pixels"),
        Channel("metallic", "rgba16f", offset=o["motion"], first=2),
        Channel("ids", "r32_uint", offset=o["ids"]),
    )
    return GBufferLayout(channels).validate(width=width, height=height)
