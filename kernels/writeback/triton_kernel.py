"""Triton kernel for `reference.write_rgba`: one pass, each pixel's three planar floats read once
and its four interleaved channels written once (eager PyTorch clamps, scales, rounds, casts and
interleaves in separate passes). Written for Triton 3.6 (the GPU machine) and 3.9 (the CPU
interpreter in CI).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import slot_values

BLOCK = 1024


@triton.jit
def unorm8(v):
    """[0, 1] float32 (clamped here) to 8-bit: round to nearest, ties to even, as torch.round of
    the float32 product v * 255. The product is only compared, never added to or subtracted from:
    on the GPU the compiler contracts a multiply feeding an add into one FMA, which rounds the exact
    product instead of the float32 one and, once in a few million pixels, lands on the other side
    of a tie (seen on an H100)."""
    p = tl.minimum(tl.maximum(v, 0.0), 1.0) * 255.0
    f = tl.floor(p)
    half = f + 0.5
    odd = (f - 2.0 * tl.floor(f * 0.5)) == 1.0
    return tl.where((p > half) | ((p == half) & odd), f + 1.0, f).to(tl.uint8)


@triton.jit
def _write_rgba(rgb_ptr, out_ptr, H, W, s_c, s_y, s_x, EIGHT_BIT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < H * W
    y = offs // W
    x = offs - y * W
    src = rgb_ptr + y.to(tl.int64) * s_y + x.to(tl.int64) * s_x
    dst = out_ptr + offs.to(tl.int64) * 4
    for c in tl.static_range(3):
        v = tl.load(src + c * s_c, mask=m, other=0.0).to(tl.float32)
        if EIGHT_BIT:
            tl.store(dst + c, unorm8(v), mask=m)
        else:
            tl.store(dst + c, v.to(tl.float16), mask=m)
    if EIGHT_BIT:
        tl.store(dst + 3, tl.full((BLOCK,), 255, tl.uint8), mask=m)
    else:
        tl.store(dst + 3, tl.full((BLOCK,), 1.0, tl.float16), mask=m)


def unsupported(rgb: torch.Tensor) -> str | None:
    if rgb.dim() != 3 or rgb.shape[0] != 3:
        return f"expected planar RGB [3, H, W], got {tuple(rgb.shape)}"
    return None


def write_rgba_triton(rgb: torch.Tensor, out: torch.Tensor, fmt: str) -> None:
    why = unsupported(rgb)
    if why:
        raise ValueError(why)
    _, h, w = rgb.shape
    dst = slot_values(out, w, h, fmt)
    _write_rgba[(triton.cdiv(h * w, BLOCK),)](rgb, dst, h, w, *rgb.stride(), EIGHT_BIT=fmt == "rgba8", BLOCK=BLOCK)
