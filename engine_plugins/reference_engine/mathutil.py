"""Small vector helpers shared by the scene, the camera and the renderer."""

from __future__ import annotations

import torch


def normalize(v: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return v / v.norm(dim=dim, keepdim=True).clamp_min(1e-12)


def rotation(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: axis [..., 3] unit, angle [...] radians -> [..., 3, 3]."""
    x, y, z = axis.unbind(-1)
    c, s = torch.cos(angle), torch.sin(angle)
    C = 1 - c
    return torch.stack([
        torch.stack([c + x * x * C, x * y * C - z * s, x * z * C + y * s], -1),
        torch.stack([y * x * C + z * s, c + y * y * C, y * z * C - x * s], -1),
        torch.stack([z * x * C - y * s, z * y * C + x * s, c + z * z * C], -1),
    ], -2)


def hash3(ix: torch.Tensor, iy: torch.Tensor, iz: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Integer lattice hash -> [0, 1). Inputs int64; same result on every device."""
    h = ix * 73856093 ^ iy * 19349663 ^ iz * 83492791 ^ (seed * 2654435761)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFFFF).to(torch.float32) / float(0x1000000)


def value_noise(p: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Smooth 3-D value noise in [0, 1). p [..., 3] float -> [...]."""
    f = torch.floor(p)
    t = p - f
    t = t * t * (3 - 2 * t)
    i = f.to(torch.int64)
    ix, iy, iz = i.unbind(-1)
    tx, ty, tz = t.unbind(-1)
    acc = 0.0
    for dx in (0, 1):
        wx = tx if dx else 1 - tx
        for dy in (0, 1):
            wy = ty if dy else 1 - ty
            for dz in (0, 1):
                wz = tz if dz else 1 - tz
                acc = acc + wx * wy * wz * hash3(ix + dx, iy + dy, iz + dz, seed)
    return acc


def fbm(p: torch.Tensor, octaves: int = 3, seed: int = 0) -> torch.Tensor:
    """Fractal value noise in about [0, 1)."""
    total, amp, norm = 0.0, 0.5, 0.0
    for o in range(octaves):
        total = total + amp * value_noise(p * (2.0 ** o), seed + o)
        norm += amp
        amp *= 0.5
    return total / norm
