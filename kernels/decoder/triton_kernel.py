"""Triton kernel for the guided decode: one pass per full-resolution pixel. For each of the 3x3
taps it samples the latent bilinearly and reads the guide, multiplies by the tap's weights (small
matrix products on the tensor cores), then the two 1x1 layers and the residual run in registers,
and the pixel is written once: planar float RGB, or straight into the engine's output format
(RGBA8 / RGBA16F, interleaved, cropped to the frame's size) so that the write-back is part of this
last pass. The reference reads and writes every pixel about eight times.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..writeback.reference import slot_values
from ..writeback.triton_kernel import unorm8
from .reference import check_slot_frame

OUT_PLANAR, OUT_RGBA8, OUT_RGBA16F = 0, 1, 2
OUT_CODES = {"rgba8": OUT_RGBA8, "rgba16f": OUT_RGBA16F}

BLOCK = 256  # pixels per program: 64 -> 256 halved the kernel's time on an H200 (benchmarks/NOTES.md)


def _pow2(n: int, lo: int = 16) -> int:
    p = lo
    while p < n:
        p *= 2
    return p


@triton.jit
def _bilinear(lat_ptr, n, y, x, h, w, kk, mask, CL: tl.constexpr, S: tl.constexpr):
    """Latent channels kk < CL sampled at full-resolution pixel (y, x): [BLOCK, K]."""
    sy = tl.maximum((y.to(tl.float32) + 0.5) / S - 0.5, 0.0)
    sx = tl.maximum((x.to(tl.float32) + 0.5) / S - 0.5, 0.0)
    y0 = tl.minimum(sy.to(tl.int32), h - 1)  # sy >= 0: truncation is floor
    x0 = tl.minimum(sx.to(tl.int32), w - 1)
    ly = sy - y0.to(tl.float32)
    lx = sx - x0.to(tl.float32)
    y1 = tl.minimum(y0 + 1, h - 1)
    x1 = tl.minimum(x0 + 1, w - 1)
    base = lat_ptr + (n * CL + kk[None, :]) * (h * w)
    m = mask[:, None] & (kk[None, :] < CL)
    v00 = tl.load(base + (y0 * w + x0)[:, None], mask=m, other=0.0).to(tl.float32)
    v01 = tl.load(base + (y0 * w + x1)[:, None], mask=m, other=0.0).to(tl.float32)
    v10 = tl.load(base + (y1 * w + x0)[:, None], mask=m, other=0.0).to(tl.float32)
    v11 = tl.load(base + (y1 * w + x1)[:, None], mask=m, other=0.0).to(tl.float32)
    lx2 = lx[:, None]
    ly2 = ly[:, None]
    return (v00 * (1.0 - lx2) + v01 * lx2) * (1.0 - ly2) + (v10 * (1.0 - lx2) + v11 * lx2) * ly2


@triton.jit
def _decode_kernel(lat_ptr, guide_ptr, wc_ptr, bc_ptr, wm_ptr, bm_ptr, wo_ptr, bo_ptr, out_ptr,
                   H, W, h, w, OH, OW, CL: tl.constexpr, CG: tl.constexpr, S: tl.constexpr,
                   K: tl.constexpr, C: tl.constexpr, O: tl.constexpr, OUT: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < H * W
    y = offs // W
    x = offs - y * W
    kk = tl.arange(0, K)
    cc = tl.arange(0, C)
    oo = tl.arange(0, O)
    is_guide = (kk >= CL) & (kk < CL + CG)
    acc = tl.zeros((BLOCK, C), dtype=tl.float32)
    for tap in tl.static_range(9):
        yy = y + (tap // 3 - 1)
        xx = x + (tap % 3 - 1)
        inside = mask & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)  # zero padding outside
        up = _bilinear(lat_ptr, n, yy, xx, h, w, kk, inside, CL, S)
        gptr = guide_ptr + ((n * CG + (kk[None, :] - CL)) * H + yy[:, None]) * W + xx[:, None]
        g = tl.load(gptr, mask=inside[:, None] & is_guide[None, :], other=0.0).to(tl.float32)
        wt = tl.load(wc_ptr + tap * K * C + kk[:, None] * C + cc[None, :])
        acc += tl.dot(up + g, wt)
    f = acc + tl.load(bc_ptr + cc)[None, :]
    f = f / (1.0 + tl.exp(-f))
    f = tl.dot(f, tl.load(wm_ptr + cc[:, None] * C + cc[None, :])) + tl.load(bm_ptr + cc)[None, :]
    f = f / (1.0 + tl.exp(-f))
    o = tl.dot(f, tl.load(wo_ptr + cc[:, None] * O + oo[None, :])) + tl.load(bo_ptr + oo)[None, :]
    upc = _bilinear(lat_ptr, n, y, x, h, w, oo, mask, CL, S)  # the residual: latent channels 0..2
    rgb = tl.minimum(tl.maximum((upc + o) * 0.5 + 0.5, 0.0), 1.0)
    if OUT == 0:  # planar float32 [N, 3, H, W]
        optr = out_ptr + ((n * 3 + oo[None, :]) * H + y[:, None]) * W + x[:, None]
        tl.store(optr, rgb, mask=mask[:, None] & (oo[None, :] < 3))
    else:  # interleaved RGBA [N, OH, OW, 4], the padding margin cropped
        keep = mask & (y < OH) & (x < OW)
        px = out_ptr + (((n * OH + y) * OW + x).to(tl.int64) * 4)
        cm = keep[:, None] & (oo[None, :] < 3)
        if OUT == 1:
            tl.store(px[:, None] + oo[None, :], unorm8(rgb), mask=cm)
            tl.store(px + 3, tl.full((BLOCK,), 255, tl.uint8), mask=keep)
        else:
            tl.store(px[:, None] + oo[None, :], rgb.to(tl.float16), mask=cm)
            tl.store(px + 3, tl.full((BLOCK,), 1.0, tl.float16), mask=keep)


def unsupported(latent: torch.Tensor, conv_w: torch.Tensor) -> str | None:
    if latent.shape[1] < 3:
        return "the latent needs at least 3 channels (RGB)"
    if conv_w.shape[0] > 64 or conv_w.shape[1] > 64:
        return f"decoder width {conv_w.shape[0]} / inputs {conv_w.shape[1]} (the kernel takes at most 64)"
    return None


def packed_weights(conv_w, conv_b, mix_w, mix_b, out_w, out_b):
    """The weights as the kernel reads them: float32, zero-padded to powers of two (>= 16)."""
    c, cin = conv_w.shape[:2]
    k, cp, o = _pow2(cin), _pow2(c), 16
    dev = conv_w.device
    wc = torch.zeros(9, k, cp, device=dev)
    wc[:, :cin, :c] = conv_w.float().permute(2, 3, 1, 0).reshape(9, cin, c)
    bc = torch.zeros(cp, device=dev)
    bc[:c] = conv_b.float()
    wm = torch.zeros(cp, cp, device=dev)
    wm[:c, :c] = mix_w.float()[:, :, 0, 0].t()
    bm = torch.zeros(cp, device=dev)
    bm[:c] = mix_b.float()
    wo = torch.zeros(cp, o, device=dev)
    wo[:c, :3] = out_w.float()[:, :, 0, 0].t()
    bo = torch.zeros(o, device=dev)
    bo[:3] = out_b.float()
    return wc, bc, wm, bm, wo, bo


def _check(latent, guide, weights, stride):
    n, cl, h, w = latent.shape
    _, cg, hh, ww = guide.shape
    if (hh, ww) != (h * stride, w * stride):
        raise ValueError(f"decode kernel: guide {ww}x{hh} is not the latent {w}x{h} times {stride}")
    k = weights[0].shape[1]
    if cl + cg > k:
        raise ValueError(f"decode kernel: {cl} + {cg} input channels do not fit the packed weights ({k})")


def _launch(latent, guide, weights, stride, out, out_code, oh, ow):
    n, cl, h, w = latent.shape
    _, cg, hh, ww = guide.shape
    wc, bc, wm, bm, wo, bo = weights
    grid = (triton.cdiv(hh * ww, BLOCK), n)
    _decode_kernel[grid](latent.contiguous(), guide.contiguous(), wc, bc, wm, bm, wo, bo, out, hh, ww, h, w, oh, ow,
                         CL=cl, CG=cg, S=stride, K=wc.shape[1], C=wc.shape[2], O=wo.shape[1], OUT=out_code,
                         BLOCK=BLOCK)


def guided_decode_triton(latent: torch.Tensor, guide: torch.Tensor, weights: tuple, stride: int,
                         out: torch.Tensor | None = None) -> torch.Tensor:
    """`weights` from `packed_weights`. Returns RGB [N, 3, H, W] float32 in [0, 1]."""
    _check(latent, guide, weights, stride)
    n, hh, ww = latent.shape[0], guide.shape[2], guide.shape[3]
    if out is None:
        out = torch.empty(n, 3, hh, ww, dtype=torch.float32, device=latent.device)
    _launch(latent, guide, weights, stride, out, OUT_PLANAR, hh, ww)
    return out


def guided_decode_rgba_triton(latent: torch.Tensor, guide: torch.Tensor, weights: tuple, stride: int,
                              out: torch.Tensor, fmt: str, width: int, height: int) -> None:
    """The decode written straight into an engine output slot: `out` the slot's bytes (uint8), the
    frame's top-left `width` x `height` pixels as interleaved RGBA in `fmt`. One frame (N = 1)."""
    _check(latent, guide, weights, stride)
    check_slot_frame(latent, guide, width, height)
    dst = slot_values(out, width, height, fmt)
    _launch(latent, guide, weights, stride, dst, OUT_CODES[fmt], height, width)
