"""Reference G-buffer packing: raw engine planes to a normalised tensor at full and latent resolution.

Each output channel group is one `PackSpec`: which components of which plane, and how to map raw
values into [-1, 1]. Outputs are clamped to [-1, 1] (a stray HDR value cannot blow up the network);
NaN is not hidden here: callers validate inputs first.
"""

from __future__ import annotations

import enum
import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F


class PackKind(enum.IntEnum):
    AFFINE = 0  # y = x * a + b
    TONEMAP = 1  # y = 2 * (u / (1 + u)) ** (1 / 2.2) - 1 with u = max(x * a, 0): linear HDR to display
    LOG_DEPTH = 2  # y = 2 * log(x / a) / log(b / a) - 1 with near a, far b


class PackSpec(NamedTuple):
    first: int  # first component read from the plane
    count: int  # components read
    kind: PackKind
    a: float
    b: float


def _normalise(x: torch.Tensor, spec: PackSpec) -> torch.Tensor:
    x = x.float()
    if spec.kind == PackKind.AFFINE:
        y = x * spec.a + spec.b
    elif spec.kind == PackKind.TONEMAP:
        u = (x * spec.a).clamp_min(0.0)
        y = 2.0 * (u / (1.0 + u)).pow(1.0 / 2.2) - 1.0
    elif spec.kind == PackKind.LOG_DEPTH:
        near, far = spec.a, spec.b
        y = 2.0 * torch.log(x.clamp(near, far) / near) / math.log(far / near) - 1.0
    else:
        raise ValueError(f"unknown pack kind {spec.kind!r}")
    return y.clamp(-1.0, 1.0)


def pack_gbuffers(planes: Sequence[torch.Tensor], specs: Sequence[PackSpec],
                  down: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise and stack G-buffer channels; also return them averaged down by `down`.

    planes[i]: [B, H, W, C_i] in the engine's dtype (uint8, float16, float32); spec i reads
    components first..first+count of planes[i]. H and W must be multiples of `down`.
    Returns full [B, sum(count), H, W] float32 and low [B, sum(count), H/down, W/down] float32.
    """
    if len(planes) != len(specs):
        raise ValueError("one spec per plane")
    parts = []
    for plane, spec in zip(planes, specs):
        sel = plane[..., spec.first:spec.first + spec.count]  # [B, H, W, count]
        parts.append(_normalise(sel, spec).permute(0, 3, 1, 2))
    full = torch.cat(parts, dim=1).contiguous()  # [B, C, H, W]
    low = F.avg_pool2d(full, down) if down > 1 else full
    return full, low
