"""Triton kernel for `refiner_features`: the refiner's whole per-pixel input x [B, H, W, Cin]
written in one pass, where the reference is about 40 full-resolution ATen ops (upsample, casts,
the history's arithmetic, position grids, the embedding gather, the surface Linear, sin, cos and
concatenations), each a trip through memory.

One program per block of `BLOCK` consecutive pixels (row-major over H x W) of one image, holding
a [BLOCK, CP] tile of x's channels before the surface features (CP: their count rounded up to a
power of two) and [BLOCK, NFP] tiles of the features' sines and cosines (so each is taken once
per pixel); each tile is stored once, contiguous along the channels. Per pixel it reads the four latent texels of the bilinear upsample, the guide, history and mask
planes, the object id and the surface position, each once; the id table (256 x E) and the surface
Linear's weights (F x 3 + F) are read in place from the module's parameters (no packing, nothing
allocated but x). Every input is taken through its strides, so the engine slot's strided views
(ids, surface) and a channel range of the packed G-buffers (the guide) are read without a copy.

What it writes, per pixel (i, j) of image n, channel blocks in `feature_channels` order, `r()`
rounding to the activations' dtype:

    base[c]  = r(bilinear(r(latent[n, c]), src = max((1/stride) * (i + 0.5) - 0.5, 0), likewise j))
    guide[c] = r(guide[n, c, i, j])
    hist[c]  = r(r(r(history[n, c, i, j]) * 2 - 1) * m),   m = r(mask[n, 0, i, j]);  mask = m
    position = r(((j % stride) + 0.5) * (2 / stride) - 1), the same for i, r((j + 0.5) * (2 / width) - 1),
               r((i + 0.5) * (2 / height) - 1)
    ids[k]   = r(id_table[ids[n, i, j] & 255, k])                        (0 without ids)
    surface  = r(sin(p_k)) for k < F, then r(cos(p_k)),  p_k = 2 pi * (s . w_k + b_k) in float32
               with s = surface[n, i, j, 0:3] (0 without a surface), whatever the Linear's dtype

Formulas are `reference.py`'s, with its roundings reproduced: each value is computed in float32
and rounded to the activations' dtype at every point where the reference's PyTorch op chain does
(`_round`, round half to even as torch's `.to()`), so the history, mask, positions, guide and
ids channels are the reference's bit for bit. The upsample follows ATen's bilinear kernel
(source index max(scale * (i + 0.5) - 0.5, 0), `scale` = float32(1 / stride), upper neighbour
clamped at the last texel). FMA contraction is off for the kernel, so `a * b - c` rounds twice as
the reference's separate ops do. What can differ: the surface Linear's three-term sum (the
reference's order is not ours: a float32 ulp of the phase)
and the upsample's sum on float32 latents (one float32 ulp). sin and cos are libdevice's
(`tl.sin` lowers to `__nv_sinf`, within 2 ulp) on a GPU, numpy's in the interpreter.

The bfloat16 rounding is integer arithmetic on the float32 bits, the same on a GPU and in the
interpreter (whose own float32-to-bfloat16 cast truncates). Written for Triton 3.6 (the GPU
machine) and 3.8/3.9 (the CPU interpreter in CI).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import ID_BUCKETS, check_features, feature_channels

BLOCK, NUM_WARPS = 128, 4  # pixels per program; `benchmarks/bench_refiner.py --features` times others
MAX_CHANNELS = 64  # the widest x the kernel takes (the refiner's kernels take at most 64 too)
KINDS = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}  # `_round`'s codes
ID_DTYPES = (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8)
TWO_PI = tl.constexpr(6.283185307179586)  # 2 * math.pi; a float32 in the kernel, as in the reference


@triton.jit
def _round(x, KIND: tl.constexpr):
    """float32 `x` rounded to the activations' dtype (KIND 0 float32, 1 bfloat16, 2 float16) and
    returned as float32: round half to even, as torch's `.to()` (finite values)."""
    y = x
    if KIND == 1:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & 0xFFFF0000
        y = bits.to(tl.float32, bitcast=True)
    if KIND == 2:
        y = x.to(tl.float16).to(tl.float32)
    return y


@triton.jit
def _source(i, scale, size):
    """ATen's bilinear source of output index `i` (align_corners=False): the lower texel, the
    upper one (clamped to the last), and the upper one's weight."""
    f = scale * (i.to(tl.float32) + 0.5) - 0.5
    f = tl.where(f < 0.0, 0.0, f)
    lo = f.to(tl.int32)  # f >= 0: truncation is floor
    return lo, lo + (lo < size - 1).to(tl.int32), f - lo.to(tl.float32)


@triton.jit
def _features_kernel(lat_ptr, guide_ptr, hist_ptr, mask_ptr, ids_ptr, table_ptr, surf_ptr, sw_ptr, sb_ptr, x_ptr,
                     H, W, h, w,
                     sl_b, sl_c, sl_h, sl_w, sg_b, sg_c, sg_h, sg_w, sh_b, sh_c, sh_h, sh_w, sm_b, sm_h, sm_w,
                     si_b, si_h, si_w, st_r, st_c, ss_b, ss_h, ss_w, ss_c, sw_r, sw_c, sb_s,
                     inv_stride, phase_scale, screen_x, screen_y,
                     STRIDE: tl.constexpr, G0: tl.constexpr, H0: tl.constexpr, M0: tl.constexpr,
                     P0: tl.constexpr, I0: tl.constexpr, S0: tl.constexpr, E: tl.constexpr, NF: tl.constexpr,
                     NFP: tl.constexpr, CIN: tl.constexpr, CP: tl.constexpr, ID_MASK: tl.constexpr, HAS_IDS: tl.constexpr,
                     HAS_SURFACE: tl.constexpr, OUT: tl.constexpr, BLOCK: tl.constexpr):
    # G0, H0, M0, P0, I0, S0: where the guide, history, mask, positions, ids and surface start
    # in x (`feature_channels`); the latent's channels are [0, G0)
    n = tl.program_id(1).to(tl.int64)
    p0 = tl.program_id(0) * BLOCK
    i = tl.arange(0, BLOCK)
    p = p0 + i  # [BLOCK] pixels, row-major
    ok = p < H * W
    row = p // W
    col = p - row * W
    ch = tl.arange(0, CP)[None, :]  # [1, CP] channels of x
    okc = ok[:, None]

    # base: the latent upsampled bilinearly, from the latent rounded to the activations' dtype
    y0, y1, ly = _source(row, inv_stride, h)
    x0, x1, lx = _source(col, inv_stride, w)
    lat = lat_ptr + n * sl_b + ch * sl_c
    r0 = (y0 * sl_h)[:, None]
    r1 = (y1 * sl_h)[:, None]
    c0 = (x0 * sl_w)[:, None]
    c1 = (x1 * sl_w)[:, None]
    is_base = okc & (ch < G0)
    v00 = _round(tl.load(lat + r0 + c0, mask=is_base, other=0.0).to(tl.float32), OUT)
    v01 = _round(tl.load(lat + r0 + c1, mask=is_base, other=0.0).to(tl.float32), OUT)
    v10 = _round(tl.load(lat + r1 + c0, mask=is_base, other=0.0).to(tl.float32), OUT)
    v11 = _round(tl.load(lat + r1 + c1, mask=is_base, other=0.0).to(tl.float32), OUT)
    wx1 = lx[:, None]
    wx0 = 1.0 - wx1
    wy1 = ly[:, None]
    wy0 = 1.0 - wy1
    base = wy0 * (wx0 * v00 + wx1 * v01) + wy1 * (wx0 * v10 + wx1 * v11)
    x = tl.where(ch < G0, _round(base, OUT), 0.0)  # [BLOCK, CP]: x's channels before the surface's; absent ids stay 0

    # guide, as it is (rounded to the activations' dtype)
    is_guide = (ch >= G0) & (ch < H0)
    g = tl.load(guide_ptr + n * sg_b + (ch - G0) * sg_c + (row * sg_h + col * sg_w)[:, None],
                mask=okc & is_guide, other=0.0).to(tl.float32)
    x = tl.where(is_guide, _round(g, OUT), x)

    # history * 2 - 1, masked; the mask
    m = _round(tl.load(mask_ptr + n * sm_b + row * sm_h + col * sm_w, mask=ok, other=0.0).to(tl.float32), OUT)
    is_hist = (ch >= H0) & (ch < M0)
    hv = tl.load(hist_ptr + n * sh_b + (ch - H0) * sh_c + (row * sh_h + col * sh_w)[:, None],
                 mask=okc & is_hist, other=0.0).to(tl.float32)
    hv = _round(_round(_round(hv, OUT) * 2.0 - 1.0, OUT) * m[:, None], OUT)
    x = tl.where(is_hist, hv, x)
    x = tl.where(ch == M0, m[:, None], x)

    # positions: inside the latent pixel, then on the screen (the frame's real size)
    phx = ((col % STRIDE).to(tl.float32) + 0.5) * phase_scale - 1.0
    phy = ((row % STRIDE).to(tl.float32) + 0.5) * phase_scale - 1.0
    scx = (col.to(tl.float32) + 0.5) * screen_x - 1.0
    scy = (row.to(tl.float32) + 0.5) * screen_y - 1.0
    x = tl.where(ch == P0, _round(phx, OUT)[:, None], x)
    x = tl.where(ch == P0 + 1, _round(phy, OUT)[:, None], x)
    x = tl.where(ch == P0 + 2, _round(scx, OUT)[:, None], x)
    x = tl.where(ch == P0 + 3, _round(scy, OUT)[:, None], x)

    # the object id's embedding row
    if HAS_IDS:
        is_id = (ch >= I0) & (ch < I0 + E)
        idx = (tl.load(ids_ptr + n * si_b + row * si_h + col * si_w, mask=ok, other=0) & ID_MASK).to(tl.int32)
        t = tl.load(table_ptr + idx[:, None] * st_r + (ch - I0) * st_c, mask=okc & is_id, other=0.0).to(tl.float32)
        x = tl.where(is_id, _round(t, OUT), x)

    out = x_ptr + (n * H * W + p0) * CIN  # the block's first pixel: one int64 address
    tl.store(out + (i[:, None] * CIN + ch), x.to(x_ptr.dtype.element_ty), mask=okc & (ch < S0))

    # surface Fourier features, in their own [BLOCK, NFP] tiles so that each sin and cos is taken
    # once per pixel: the Linear, sin and cos in float32
    j = tl.arange(0, NFP)[None, :]
    jm = j < NF
    if HAS_SURFACE:
        sp = surf_ptr + n * ss_b + row * ss_h + col * ss_w
        s0 = tl.load(sp, mask=ok, other=0.0).to(tl.float32)[:, None]
        s1 = tl.load(sp + ss_c, mask=ok, other=0.0).to(tl.float32)[:, None]
        s2 = tl.load(sp + 2 * ss_c, mask=ok, other=0.0).to(tl.float32)[:, None]
        w0 = tl.load(sw_ptr + j * sw_r, mask=jm, other=0.0).to(tl.float32)
        w1 = tl.load(sw_ptr + j * sw_r + sw_c, mask=jm, other=0.0).to(tl.float32)
        w2 = tl.load(sw_ptr + j * sw_r + 2 * sw_c, mask=jm, other=0.0).to(tl.float32)
        bj = tl.load(sb_ptr + j * sb_s, mask=jm, other=0.0).to(tl.float32)
        phase = (tl.fma(s2, w2, tl.fma(s1, w1, s0 * w0)) + bj) * TWO_PI  # [BLOCK, NFP]
        sin = _round(tl.sin(phase), OUT)
        cos = _round(tl.cos(phase), OUT)
    else:  # zeros where the layout has no surface channel
        sin = tl.zeros((BLOCK, NFP), dtype=tl.float32)
        cos = sin
    if NF > 0:
        keep = okc & jm
        tl.store(out + (i[:, None] * CIN + S0 + j), sin.to(x_ptr.dtype.element_ty), mask=keep)
        tl.store(out + (i[:, None] * CIN + S0 + NF + j), cos.to(x_ptr.dtype.element_ty), mask=keep)


def unsupported(guide: torch.Tensor, ids: torch.Tensor | None, id_table: torch.Tensor | None,
                surface_weight: torch.Tensor | None) -> str | None:
    """Why the kernel cannot take these inputs (None when it can)."""
    cin = feature_channels(guide.shape[1], id_table.shape[1] if id_table is not None else 0,
                           surface_weight.shape[0] if surface_weight is not None else 0).total
    if cin > MAX_CHANNELS:
        return f"{cin} input channels (the features kernel writes at most {MAX_CHANNELS})"
    if ids is not None and ids.dtype not in ID_DTYPES:
        return f"ids of {ids.dtype} (the kernel reads {', '.join(str(d) for d in ID_DTYPES)})"
    return None


def refiner_features_triton(latent: torch.Tensor, guide: torch.Tensor, history: torch.Tensor, mask: torch.Tensor,
                            ids: torch.Tensor | None, surface: torch.Tensor | None, id_table: torch.Tensor | None,
                            surface_weight: torch.Tensor | None, surface_bias: torch.Tensor | None, stride: int,
                            width: int, height: int, dtype: torch.dtype, out: torch.Tensor | None = None,
                            block: int = BLOCK, num_warps: int = NUM_WARPS) -> torch.Tensor:
    """Same contract as `reference.refiner_features`; x is written into `out` when given."""
    check_features(latent, guide, history, mask, ids, surface, id_table, surface_weight, surface_bias, stride,
                   width, height, dtype, out)
    why = unsupported(guide, ids, id_table, surface_weight)
    if why is not None:
        raise ValueError(f"refiner features kernel: {why}")
    if block < 1 or block & (block - 1):
        raise ValueError(f"refiner features kernel: a block is a power of two of pixels, not {block}")
    b, cg, hh, ww = guide.shape
    e = id_table.shape[1] if id_table is not None else 0
    nf = surface_weight.shape[0] if surface_weight is not None else 0
    lay = feature_channels(cg, e, nf)
    cin = lay.total
    if out is None:
        out = torch.empty(b, hh, ww, cin, device=guide.device, dtype=dtype)
    has_ids, has_surface = ids is not None and e > 0, surface is not None and nf > 0
    ids_t = ids if has_ids else mask
    table = id_table if has_ids else mask
    surf = surface if has_surface else mask
    sw, sb = (surface_weight, surface_bias) if has_surface else (mask, mask)
    si = ids_t.stride() if has_ids else (0, 0, 0)
    st = table.stride() if has_ids else (0, 0)
    ss = surf.stride() if has_surface else (0, 0, 0, 0)
    sws, sbs = (sw.stride(), sb.stride()) if has_surface else ((0, 0), (0,))
    _, _, h, w = latent.shape
    grid = (triton.cdiv(hh * ww, block), b)
    _features_kernel[grid](
        latent, guide, history, mask, ids_t, table, surf, sw, sb, out, hh, ww, h, w,
        *latent.stride(), *guide.stride(), *history.stride(), mask.stride(0), mask.stride(2), mask.stride(3),
        *si, *st, *ss, *sws, *sbs,
        1.0 / stride, 2.0 / stride, 2.0 / width, 2.0 / height,
        STRIDE=stride, G0=lay.guide, H0=lay.hist, M0=lay.mask, P0=lay.position, I0=lay.ids, S0=lay.surface, E=e,
        NF=nf, NFP=triton.next_power_of_2(max(nf, 1)), CIN=cin, CP=triton.next_power_of_2(lay.surface), ID_MASK=ID_BUCKETS - 1, HAS_IDS=has_ids,
        HAS_SURFACE=has_surface, OUT=KINDS[dtype], BLOCK=block,
        num_warps=num_warps, enable_fp_fusion=False)
    return out

