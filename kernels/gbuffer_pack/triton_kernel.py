"""Triton kernel for `pack_gbuffers`: each plane is read once, straight from the engine's format
(uint8, float16, float32, strided views of one slot), normalised, clamped, written at full
resolution and averaged down to the latent grid in the same pass. One launch per plane; each
program owns a block of latent pixels and walks their `down` x `down` footprints.
"""

from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from .reference import PackKind, PackSpec

BLOCK = 128


@triton.jit
def _pack_plane(plane_ptr, sb, sh, sw, first, a, b, full_ptr, low_ptr, ch0, C, H, W, h, w,
                COUNT: tl.constexpr, KIND: tl.constexpr, DOWN: tl.constexpr, BLOCK: tl.constexpr):
    bi = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < h * w
    ly = offs // w
    lx = offs - ly * w
    for c in tl.static_range(COUNT):
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        for dy in tl.static_range(DOWN):
            for dx in tl.static_range(DOWN):
                y = ly * DOWN + dy
                x = lx * DOWN + dx
                raw = tl.load(plane_ptr + bi * sb + y * sh + x * sw + first + c, mask=mask, other=0).to(tl.float32)
                if KIND == 0:  # affine
                    val = raw * a + b
                elif KIND == 1:  # tonemap linear HDR to display
                    u = tl.maximum(raw * a, 0.0)
                    val = 2.0 * tl.exp(tl.log(u / (1.0 + u)) / 2.2) - 1.0
                else:  # log depth between near a and far b
                    val = 2.0 * tl.log(tl.minimum(tl.maximum(raw, a), b) / a) / tl.log(b / a) - 1.0
                val = tl.minimum(tl.maximum(val, -1.0), 1.0)
                tl.store(full_ptr + ((bi * C + ch0 + c) * H + y) * W + x, val, mask=mask)
                acc += val
        tl.store(low_ptr + ((bi * C + ch0 + c) * h + ly) * w + lx, acc / (DOWN * DOWN), mask=mask)


def unsupported(planes: Sequence[torch.Tensor]) -> str | None:
    for i, p in enumerate(planes):
        if p.dim() != 4:
            return f"plane {i} must be [B, H, W, C], got {tuple(p.shape)}"
        if p.stride(3) != 1:
            return f"plane {i}'s components are not adjacent in memory"
        if p.dtype not in (torch.uint8, torch.float16, torch.bfloat16, torch.float32):
            return f"plane {i} is {p.dtype}"
    return None


def pack_gbuffers_triton(planes: Sequence[torch.Tensor], specs: Sequence[PackSpec], down: int,
                         outputs: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `reference.pack_gbuffers`. `outputs` (full, low) may be given to write
    into (tests poison them first)."""
    if len(planes) != len(specs):
        raise ValueError("one spec per plane")
    why = unsupported(planes)
    if why is not None:
        raise ValueError(f"pack kernel: {why}")
    bsz, hh, ww, _ = planes[0].shape
    if hh % down or ww % down:
        raise ValueError(f"pack kernel: {ww}x{hh} is not a multiple of {down}")
    h, w = hh // down, ww // down
    total = sum(s.count for s in specs)
    dev = planes[0].device
    if outputs is None:
        full = torch.empty(bsz, total, hh, ww, dtype=torch.float32, device=dev)
        low = torch.empty(bsz, total, h, w, dtype=torch.float32, device=dev)
    else:
        full, low = outputs
    ch0 = 0
    grid = (triton.cdiv(h * w, BLOCK), bsz)
    for plane, spec in zip(planes, specs):
        if spec.kind == PackKind.LOG_DEPTH and not 0 < spec.a < spec.b:
            raise ValueError(f"pack kernel: log depth needs 0 < near < far, got {spec.a}, {spec.b}")
        sb, sh, sw, _ = plane.stride()
        _pack_plane[grid](plane, sb, sh, sw, spec.first, float(spec.a), float(spec.b), full, low, ch0, total,
                          hh, ww, h, w, COUNT=spec.count, KIND=int(spec.kind), DOWN=down, BLOCK=BLOCK)
        ch0 += spec.count
    return full, low
