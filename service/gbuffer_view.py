"""How the preview page shows an input channel beside the stylized output: one picture per
G-buffer channel, in RGB8, from the plane as the engine wrote it (its format and encoding).

- color: `display` as it is, `linear_hdr` times its exposure, Reinhard-tone-mapped, gamma 2.2;
- depth: grey, near bright, on a log scale stretched over the frame's own 2nd to 98th percentile
  (a fixed near..far range would put most scenes in a few grey levels);
- normals: x, y, z as red, green, blue (signed ones mapped from [-1, 1]);
- albedo: as it is; roughness and metallic: grey;
- motion: the usual optical-flow colours: hue is the direction, saturation the length against the
  frame's 99th percentile (white is still);
- ids: a colour per id from a multiplicative hash (0 is black).

What must hold: the result is [h, w, 3] uint8 for any plane of the channel's format, NaN and
infinities included (they show as black); a channel name this module does not know raises
ValueError, never a guess.
"""

from __future__ import annotations

import numpy as np

from ..interop.layout import FORMATS, Channel


def _unit(x: np.ndarray) -> np.ndarray:
    return (np.clip(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _grey(x: np.ndarray) -> np.ndarray:
    g = _unit(x)
    return np.repeat(g[..., None], 3, axis=-1)


def _components(plane: np.ndarray, channel: Channel) -> np.ndarray:
    """The channel's components as float32 [h, w, n], unorm formats divided by 255."""
    fmt = FORMATS[channel.format]
    x = plane[..., channel.first: channel.first + channel.components]
    return x.astype(np.float32) / 255.0 if fmt.unorm else x.astype(np.float32)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6).astype(np.int64) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    rgb = np.zeros(h.shape + (3,), np.float32)
    for k, (r, g, b) in enumerate(choices):
        m = i == k
        rgb[m] = np.stack([r[m], g[m], b[m]], -1)
    return rgb


def visualize(plane: np.ndarray, channel: Channel, motion_scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """plane: [h, w, format components] in the channel's format (a subsampled copy of it is fine);
    motion_scale: the layout's factors from raw motion to pixels. Returns [h, w, 3] uint8."""
    name, enc = channel.name, channel.resolved_encoding
    if name == "ids":
        ids = plane[..., channel.first].astype(np.uint32)
        h = ids * np.uint32(2654435761)  # Knuth's multiplicative hash: neighbouring ids differ
        rgb = np.stack([(h >> 24) & 255, (h >> 16) & 255, (h >> 8) & 255], -1).astype(np.uint8)
        rgb[ids == 0] = 0
        return rgb
    x = _components(plane, channel)
    if name == "color":
        rgb = x[..., :3]
        if enc == "linear_hdr":
            rgb = np.maximum(np.nan_to_num(rgb * channel.exposure, nan=0.0, posinf=0.0, neginf=0.0), 0)
            rgb = (rgb / (1 + rgb)) ** (1 / 2.2)
        return _unit(rgb)
    if name == "depth":
        d = x[..., 0]
        ok = np.isfinite(d) & (d > 0)
        if not ok.any():
            return np.zeros(d.shape + (3,), np.uint8)
        logd = np.log(np.where(ok, d, 1.0))
        lo, hi = np.percentile(logd[ok], [2, 98])
        t = (logd - lo) / max(float(hi - lo), 1e-6)
        return _grey(np.where(ok, 1.0 - t, 0.0))
    if name == "normals":
        n = x[..., :3]
        return _unit(n * 0.5 + 0.5 if enc == "signed" else n)
    if name == "albedo":
        return _unit(x[..., :3])
    if name in ("roughness", "metallic"):
        return _grey(x[..., 0])
    if name == "motion":
        m = np.nan_to_num(x[..., :2], nan=0.0, posinf=0.0, neginf=0.0)
        dx, dy = m[..., 0] * motion_scale[0], m[..., 1] * motion_scale[1]
        length = np.hypot(dx, dy)
        scale = max(float(np.percentile(length, 99)), 1e-3)
        hue = (np.arctan2(dy, dx) / (2 * np.pi)) % 1.0
        return _unit(_hsv_to_rgb(hue, np.clip(length / scale, 0, 1), np.ones_like(hue)))
    raise ValueError(f"no view for channel {name!r}")
