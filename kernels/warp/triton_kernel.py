"""Triton kernel for `warp_previous`: one pass per pixel reads the motion, samples the previous
latent bilinearly (border clamp) and the previous depth at the nearest texel, runs the depth test
and writes the warped latent and the valid mask. The reference is four grid_samples' worth of
temporaries; this reads each input once.

Coordinates follow `reference.py` exactly, including the round trip through grid_sample's
normalised coordinates (so the nearest-texel choice matches it bit for bit) and round-half-to-even
for the nearest texel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 256


@triton.jit
def _warp_kernel(lat_ptr, pdepth_ptr, motion_ptr, depth_ptr, out_ptr, valid_ptr, H, W, tolerance,
                 C: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    n = H * W
    mask = offs < n
    y = offs // W
    x = offs - y * W
    mx = tl.load(motion_ptr + b * 2 * n + offs, mask=mask, other=0.0).to(tl.float32)
    my = tl.load(motion_ptr + b * 2 * n + n + offs, mask=mask, other=0.0).to(tl.float32)
    wf = W.to(tl.float32)
    hf = H.to(tl.float32)
    src_x = x.to(tl.float32) + mx
    src_y = y.to(tl.float32) + my
    # grid_sample(align_corners=False): normalise, then unnormalise, as the reference does
    gx = (2.0 * src_x + 1.0) / wf - 1.0
    gy = (2.0 * src_y + 1.0) / hf - 1.0
    ix = ((gx + 1.0) * wf - 1.0) / 2.0
    iy = ((gy + 1.0) * hf - 1.0) / 2.0
    # padding_mode="border": clamp the coordinate into the image
    ix = tl.minimum(tl.maximum(ix, 0.0), wf - 1.0)
    iy = tl.minimum(tl.maximum(iy, 0.0), hf - 1.0)
    x0f = tl.floor(ix)
    y0f = tl.floor(iy)
    wx = ix - x0f
    wy = iy - y0f
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)
    x1 = tl.minimum(x0 + 1, W - 1)
    y1 = tl.minimum(y0 + 1, H - 1)
    for c in tl.static_range(C):
        base = lat_ptr + (b * C + c) * n
        v00 = tl.load(base + y0 * W + x0, mask=mask, other=0.0).to(tl.float32)
        v01 = tl.load(base + y0 * W + x1, mask=mask, other=0.0).to(tl.float32)
        v10 = tl.load(base + y1 * W + x0, mask=mask, other=0.0).to(tl.float32)
        v11 = tl.load(base + y1 * W + x1, mask=mask, other=0.0).to(tl.float32)
        top = v00 * (1.0 - wx) + v01 * wx
        bot = v10 * (1.0 - wx) + v11 * wx
        val = top * (1.0 - wy) + bot * wy
        tl.store(out_ptr + (b * C + c) * n + offs, val.to(out_ptr.dtype.element_ty), mask=mask)
    # nearest texel, rounding halves to even like nearbyint
    rx = tl.floor(ix + 0.5)
    ry = tl.floor(iy + 0.5)
    rx = tl.where(((rx - ix) == 0.5) & ((rx.to(tl.int32) % 2) == 1), rx - 1.0, rx)
    ry = tl.where(((ry - iy) == 0.5) & ((ry.to(tl.int32) % 2) == 1), ry - 1.0, ry)
    nx = tl.minimum(tl.maximum(rx.to(tl.int32), 0), W - 1)
    ny = tl.minimum(tl.maximum(ry.to(tl.int32), 0), H - 1)
    src_depth = tl.load(pdepth_ptr + b * n + ny * W + nx, mask=mask, other=0.0).to(tl.float32)
    cur = tl.load(depth_ptr + b * n + offs, mask=mask, other=0.0).to(tl.float32)
    inside = (src_x > -0.5) & (src_x < wf - 0.5) & (src_y > -0.5) & (src_y < hf - 0.5)
    same = tl.abs(src_depth - cur) <= tolerance * tl.abs(cur)
    tl.store(valid_ptr + b * n + offs, (inside & same).to(tl.uint8), mask=mask)


def unsupported(prev_latent: torch.Tensor) -> str | None:
    if prev_latent.dim() != 4:
        return f"the latent must be [B, C, h, w], got {tuple(prev_latent.shape)}"
    if prev_latent.shape[1] > 16:
        return f"{prev_latent.shape[1]} latent channels (the kernel unrolls at most 16)"
    return None


def warp_previous_triton(prev_latent: torch.Tensor, prev_depth: torch.Tensor, motion: torch.Tensor,
                         depth: torch.Tensor, tolerance: float,
                         outputs: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `reference.warp_previous`. `outputs` (warped, valid as uint8) may be given
    to write into (tests poison them first)."""
    why = unsupported(prev_latent)
    if why is not None:
        raise ValueError(f"warp kernel: {why}")
    b, c, h, w = prev_latent.shape
    lat = prev_latent.contiguous()
    pdepth = prev_depth.contiguous()
    mot = motion.contiguous()
    cur = depth.contiguous()
    if outputs is None:
        warped = torch.empty_like(lat)
        valid = torch.empty((b, 1, h, w), dtype=torch.uint8, device=lat.device)
    else:
        warped, valid = outputs
    grid = (triton.cdiv(h * w, BLOCK), b)
    _warp_kernel[grid](lat, pdepth, mot, cur, warped, valid, h, w, float(tolerance), C=c, BLOCK=BLOCK)
    return warped, valid.view(torch.bool)
