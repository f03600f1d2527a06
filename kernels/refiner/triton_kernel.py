"""Triton kernels for the refiner's two stages (the spec: `reference.py`), one pass each.

One program per tile of TILE_H x TILE_W pixels of one image (channels-last, so a pixel's channels
are one contiguous row). The 3x3 conv is nine shifted [pixels, Cin] loads of the input, zero
outside the image, each multiplied by its tap's [Cin, C1] weights on the tensor cores (`tl.dot`,
float32 accumulation); the bias, the per-image `cond`, the SiLU and the 1x1 layer stay in
registers, so the C1-wide hidden activation never reaches memory.
- `_conv3x3_mlp_kernel` writes y [B, H, W, C2] in the input's dtype.
- `_refine_kernel` ends in the composite: its 1x1 layer has four outputs (three residual colours,
  the history blend's logit), taken as four float32 row reductions; it reads the base and history
  colours and the mask from x, writes planar float32 RGB [B, 3, H, W] (the next frame's history)
  and, when asked, the engine's RGBA8 / RGBA16F slot cropped to the frame, with
  `kernels.writeback`'s rounding (`unorm8`), in the same pass.
Neighbouring tiles re-read each other's one-pixel halo, which the L1/L2 caches serve.

Dots run in the input's dtype (bf16 x bf16 on a GPU; float32 inputs take TF32, as cuDNN's default
does; bf16 inputs on the CPU interpreter in float32, see `dot_dtype`); everything else is float32.
Channel counts are padded to powers of two (>= 16, what `tl.dot` takes) in the packed weights,
made once by the caller (`pack_*`). Launches allocate nothing but their outputs (which may be
passed in) and never wait on the device: the pair is CUDA-graph capturable. Written for Triton
3.6 (the GPU machine) and 3.8 (the CPU interpreter in CI).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ..refiner_features.triton_kernel import ID_DTYPES  # the object ids it reads, as the features kernel
from ..writeback.reference import slot_values
from ..writeback.triton_kernel import unorm8
from .reference import COLOUR_ROWS, check_activation, check_channels, check_colours, check_cond, check_out_buffer, check_slot

# Tile (rows x columns of pixels) and warps per program; `benchmarks/bench_refiner.py` sweeps them.
TILE_H, TILE_W, NUM_WARPS = 8, 16, 4
MAX_CHANNELS = 64  # the widest layer the kernels take (registers: a [pixels, 64] float32 tile)

SLOT_NONE, SLOT_RGBA8, SLOT_RGBA16F = 0, 1, 2
SLOT_CODES = {"rgba8": SLOT_RGBA8, "rgba16f": SLOT_RGBA16F}


class Packed(NamedTuple):
    """One layer's weights as a kernel reads them (`pack_conv3x3_mlp`, `pack_refine`), and the
    true channel counts the padding hides."""
    w3: torch.Tensor  # [9, CP, C1P] tap-major, in the dots' dtype (`dot_dtype`)
    b3: torch.Tensor  # [C1P] float32
    w1: torch.Tensor  # stage 1: [C1P, C2P] in the dots' dtype; stage 2: [4, C1P] float32
    b1: torch.Tensor  # stage 1: [C2P] float32; stage 2: [4] float32
    c_in: int
    c1: int
    c_out: int
    dtype: torch.dtype  # the activations' dtype these weights are for


def _pow2(n: int, lo: int = 16) -> int:
    p = lo
    while p < n:
        p *= 2
    return p


@triton.jit
def _tile(TILE_H: tl.constexpr, TILE_W: tl.constexpr, W):
    """This program's tile: its first row and column, and its pixels' rows and columns inside it
    ([TILE_H * TILE_W] each)."""
    pid = tl.program_id(0)
    tiles_x = tl.cdiv(W, TILE_W)
    ty = pid // tiles_x
    i = tl.arange(0, TILE_H * TILE_W)
    return ty * TILE_H, (pid - ty * tiles_x) * TILE_W, i // TILE_W, i % TILE_W


@triton.jit
def _conv3x3_silu(src_ptr, w_ptr, b_ptr, cond_ptr, n, r0, c0, lr, lc, H, W, C,
                  CP: tl.constexpr, C1: tl.constexpr, C1P: tl.constexpr, HAS_COND: tl.constexpr,
                  PIXELS: tl.constexpr):
    """SiLU(conv3x3(src) + b + cond[n]) at the tile's pixels: [PIXELS, C1P] float32, zero past C1.
    src [B, H, W, C] channels-last; w [9, CP, C1P]; b [C1P] float32; cond [B, C1]."""
    kk = tl.arange(0, CP)
    oo = tl.arange(0, C1P)
    row = r0 + lr
    col = c0 + lc
    inside = (row < H) & (col < W)
    # The tile's first pixel as one int64 scalar address; the pixels' offsets from it (and each
    # tap's shift) fit int32, which keeps the per-element address arithmetic narrow.
    tile = src_ptr + ((n * H + r0).to(tl.int64) * W + c0) * C
    offs = (lr * W + lc)[:, None] * C + kk[None, :]
    k_ok = (kk < C)[None, :]
    acc = tl.zeros((PIXELS, C1P), dtype=tl.float32)
    for dy in tl.static_range(3):
        r = row + (dy - 1)
        r_ok = inside & (r >= 0) & (r < H)
        for dx in tl.static_range(3):
            c = col + (dx - 1)
            m = r_ok & (c >= 0) & (c < W)  # zero padding outside the image
            v = tl.load(tile + (offs + ((dy - 1) * W + (dx - 1)) * C), mask=m[:, None] & k_ok, other=0.0)
            wt = tl.load(w_ptr + (dy * 3 + dx) * CP * C1P + kk[:, None] * C1P + oo[None, :])
            acc += tl.dot(v.to(wt.dtype), wt)
    acc += tl.load(b_ptr + oo)[None, :]
    if HAS_COND:
        acc += tl.load(cond_ptr + n * C1 + oo, mask=oo < C1, other=0.0).to(tl.float32)[None, :]
    return acc / (1.0 + tl.exp(-acc))


@triton.jit
def _conv3x3_mlp_kernel(x_ptr, w3_ptr, b3_ptr, cond_ptr, w1_ptr, b1_ptr, y_ptr, H, W, CIN, C2,
                        CINP: tl.constexpr, C1: tl.constexpr, C1P: tl.constexpr, C2P: tl.constexpr,
                        HAS_COND: tl.constexpr, ACT_OUT: tl.constexpr,
                        TILE_H: tl.constexpr, TILE_W: tl.constexpr):
    n = tl.program_id(1)
    r0, c0, lr, lc = _tile(TILE_H, TILE_W, W)
    h = _conv3x3_silu(x_ptr, w3_ptr, b3_ptr, cond_ptr, n, r0, c0, lr, lc, H, W, CIN,
                      CINP, C1, C1P, HAS_COND, TILE_H * TILE_W)  # [pixels, C1P]
    c1 = tl.arange(0, C1P)
    c2 = tl.arange(0, C2P)
    w1 = tl.load(w1_ptr + c1[:, None] * C2P + c2[None, :])
    y = tl.dot(h.to(w1.dtype), w1) + tl.load(b1_ptr + c2)[None, :]  # [pixels, C2P]
    if ACT_OUT:
        y = y / (1.0 + tl.exp(-y))
    inside = (r0 + lr < H) & (c0 + lc < W)
    tile = y_ptr + ((n * H + r0).to(tl.int64) * W + c0) * C2
    tl.store(tile + ((lr * W + lc)[:, None] * C2 + c2[None, :]), y.to(y_ptr.dtype.element_ty),
             mask=inside[:, None] & (c2 < C2)[None, :])


@triton.jit
def _channel(tile_ptr, offs, ch, inside):
    """Channel `ch` of the tile's pixels (at `offs` from `tile_ptr`), float32."""
    return tl.load(tile_ptr + (offs + ch), mask=inside, other=0.0).to(tl.float32)


@triton.jit
def _row_dot(z, w_ptr, c1):
    """z [pixels, C1P] times one float32 weight row [C1P]: [pixels]."""
    return tl.sum(z * tl.load(w_ptr + c1)[None, :], axis=1)


@triton.jit
def _refine_kernel(y_ptr, x_ptr, w3_ptr, b3_ptr, cond_ptr, w1_ptr, b1_ptr, rgb_ptr, slot_ptr, ids_ptr, col_ptr,
                   H, W, CY, CIN, base_ch, hist_ch, mask_ch, OH, OW, si_b, si_h, si_w, sc_b, sc_r, sc_c,
                   CYP: tl.constexpr, C1: tl.constexpr, C1P: tl.constexpr, HAS_COND: tl.constexpr,
                   HAS_COLOURS: tl.constexpr, ID_MASK: tl.constexpr, SLOT: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr):
    n = tl.program_id(1)
    r0, c0, lr, lc = _tile(TILE_H, TILE_W, W)
    z = _conv3x3_silu(y_ptr, w3_ptr, b3_ptr, cond_ptr, n, r0, c0, lr, lc, H, W, CY,
                      CYP, C1, C1P, HAS_COND, TILE_H * TILE_W)  # [pixels, C1P]
    c1 = tl.arange(0, C1P)
    row = r0 + lr
    col = c0 + lc
    inside = (row < H) & (col < W)
    x_tile = x_ptr + ((n * H + r0).to(tl.int64) * W + c0) * CIN
    x_offs = (lr * W + lc) * CIN
    logit = _row_dot(z, w1_ptr + 3 * C1P, c1) + tl.load(b1_ptr + 3)
    alpha = _channel(x_tile, x_offs, mask_ch, inside) / (1.0 + tl.exp(-logit))
    rgb_tile = rgb_ptr + ((n * 3 * H + r0).to(tl.int64) * W + c0)  # rgb[n, c] at + c * H * W
    rgb_offs = lr * W + lc
    slot_px = (row * OW + col).to(tl.int64) * 4  # one frame, row pitch = the frame's width
    keep = inside & (row < OH) & (col < OW)
    if HAS_COLOURS:  # the object's row of this image's colour table (the id's low bits)
        nn = n.to(tl.int64)
        idx = tl.load(ids_ptr + nn * si_b + row * si_h + col * si_w, mask=inside, other=0) & ID_MASK
        tint = col_ptr + nn * sc_b + idx.to(tl.int32) * sc_r
    for c in tl.static_range(3):
        res = _row_dot(z, w1_ptr + c * C1P, c1) + tl.load(b1_ptr + c)
        fresh = (_channel(x_tile, x_offs, base_ch + c, inside) + 1.0) * 0.5 + res
        if HAS_COLOURS:
            fresh = fresh + tl.load(tint + c * sc_c, mask=inside, other=0.0).to(tl.float32)
        hist = (_channel(x_tile, x_offs, hist_ch + c, inside) + 1.0) * 0.5
        v = tl.minimum(tl.maximum(fresh + alpha * (hist - fresh), 0.0), 1.0)
        tl.store(rgb_tile + c * H * W + rgb_offs, v, mask=inside)
        if SLOT == 1:
            tl.store(slot_ptr + slot_px + c, unorm8(v), mask=keep)
        if SLOT == 2:
            tl.store(slot_ptr + slot_px + c, v.to(tl.float16), mask=keep)
    if SLOT == 1:
        tl.store(slot_ptr + slot_px + 3, tl.full((TILE_H * TILE_W,), 255, tl.uint8), mask=keep)
    if SLOT == 2:
        tl.store(slot_ptr + slot_px + 3, tl.full((TILE_H * TILE_W,), 1.0, tl.float16), mask=keep)


def unsupported(x: torch.Tensor, w3: torch.Tensor, w1: torch.Tensor, *others: torch.Tensor) -> str | None:
    """Why the kernels cannot take this stage (None when they can): x its conv's input, `others`
    the other activations it reads."""
    widest = max(x.shape[3], w3.shape[0], w1.shape[0])
    if widest > MAX_CHANNELS:
        return f"a layer {widest} channels wide (the refiner kernels take at most {MAX_CHANNELS})"
    for t in (x, *others):
        if not t.is_contiguous():
            return "its activations are not contiguous channels-last [B, H, W, C] tensors"
    return None


def dot_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype of the dots for activations of `dtype`: their own on a GPU; on the CPU (the
    interpreter) bfloat16 ones are multiplied in float32, because the interpreter keeps bfloat16
    as raw uint16 and its `tl.dot` multiplies the bit patterns (triton-lang/triton#11584; Triton's
    debugging guide: no bfloat16 arithmetic in the interpreter)."""
    return torch.float32 if dtype == torch.bfloat16 and device.type == "cpu" else dtype


def _conv_weights(w3: torch.Tensor, b3: torch.Tensor, dtype: torch.dtype):
    dtype = dot_dtype(dtype, w3.device)
    c1, c = w3.shape[:2]
    cp, c1p = _pow2(c), _pow2(c1)
    w = torch.zeros(9, cp, c1p, device=w3.device, dtype=dtype)
    w[:, :c, :c1] = w3.detach().permute(2, 3, 1, 0).reshape(9, c, c1).to(dtype)
    b = torch.zeros(c1p, device=w3.device)
    b[:c1] = b3.detach().float()
    return w, b


def pack_conv3x3_mlp(w3: torch.Tensor, b3: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                     dtype: torch.dtype) -> Packed:
    """Stage 1's weights (w3 [C1, Cin, 3, 3], b3 [C1], w1 [C2, C1], b1 [C2]) for activations of
    `dtype`: both layers' products run in it."""
    w3p, b3p = _conv_weights(w3, b3, dtype)
    c2, c1 = w1.shape
    w1p = torch.zeros(w3p.shape[2], _pow2(c2), device=w1.device, dtype=w3p.dtype)
    w1p[:c1, :c2] = w1.detach().t().to(w3p.dtype)
    b1p = torch.zeros(w1p.shape[1], device=w1.device)
    b1p[:c2] = b1.detach().float()
    return Packed(w3p, b3p, w1p, b1p, w3.shape[1], c1, c2, dtype)


def pack_refine(w3: torch.Tensor, b3: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                dtype: torch.dtype) -> Packed:
    """Stage 2's weights (w3 [C1, Cy, 3, 3], b3 [C1], w1 [4, C1], b1 [4]) for activations of
    `dtype`: the conv's products run in it, the four-output 1x1 layer in float32."""
    w3p, b3p = _conv_weights(w3, b3, dtype)
    w1p = torch.zeros(4, w3p.shape[2], device=w1.device)
    w1p[:, :w1.shape[1]] = w1.detach().float()
    return Packed(w3p, b3p, w1p, b1.detach().float().contiguous(), w3.shape[1], w3.shape[0], 4, dtype)


def _launch_shape(t: torch.Tensor, packed: Packed, tile, what: str):
    """The stage's input fits its packed weights; the tile is powers of two, at least 16 pixels
    (what `tl.dot` takes). Returns the tile."""
    check_activation(what, t)
    if t.shape[3] != packed.c_in or t.dtype != packed.dtype:
        raise ValueError(f"refiner: weights packed for {packed.c_in} channels of {packed.dtype} cannot take "
                         f"{what} {t.dtype} {list(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"refiner: {what} must be a contiguous channels-last [B, H, W, C] tensor")
    th, tw = tile if tile is not None else (TILE_H, TILE_W)
    if th < 1 or tw < 1 or th & (th - 1) or tw & (tw - 1) or th * tw < 16:
        raise ValueError(f"refiner: a tile is powers of two of at least 16 pixels, not {th}x{tw}")
    return th, tw


def conv3x3_mlp_triton(x: torch.Tensor, packed: Packed, cond: torch.Tensor | None, act_out: bool = True,
                       out_y: torch.Tensor | None = None, tile: tuple[int, int] | None = None,
                       num_warps: int = NUM_WARPS) -> torch.Tensor:
    """Stage 1 (`reference.conv3x3_mlp`). x [B, H, W, Cin] contiguous; `packed` from
    `pack_conv3x3_mlp` for x's dtype; cond [B, C1] or None. Returns y [B, H, W, C2] in x's dtype
    (into `out_y` when given)."""
    th, tw = _launch_shape(x, packed, tile, "x")
    b, h, w, cin = x.shape
    check_cond(cond, x, packed.c1)
    check_out_buffer("out_y", out_y, (b, h, w, packed.c_out), x.dtype, x.device)
    if out_y is None:
        out_y = torch.empty(b, h, w, packed.c_out, device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(h, th) * triton.cdiv(w, tw), b)
    _conv3x3_mlp_kernel[grid](
        x, packed.w3, packed.b3, cond if cond is not None else packed.b3, packed.w1, packed.b1, out_y,
        h, w, cin, packed.c_out, CINP=packed.w3.shape[1], C1=packed.c1, C1P=packed.w3.shape[2],
        C2P=packed.w1.shape[1], HAS_COND=cond is not None, ACT_OUT=bool(act_out), TILE_H=th, TILE_W=tw,
        num_warps=num_warps)
    return out_y


def refine_composite_triton(y: torch.Tensor, x: torch.Tensor, packed: Packed, cond: torch.Tensor | None,
                            base_ch: int, hist_ch: int, mask_ch: int, width: int | None = None,
                            height: int | None = None, out: torch.Tensor | None = None, fmt: str | None = None,
                            out_rgb: torch.Tensor | None = None, tile: tuple[int, int] | None = None,
                            num_warps: int = NUM_WARPS, ids: torch.Tensor | None = None,
                            colours: torch.Tensor | None = None) -> torch.Tensor:
    """Stage 2 (`reference.refine_composite`). y [B, H, W, Cy] and x [B, H, W, Cin] contiguous;
    `packed` from `pack_refine` for y's dtype; ids [B, H, W] (any strides) and colours
    [B, 256, 3], or neither. Returns rgb [B, 3, H, W] float32 (into `out_rgb` when given); with
    `out` and `fmt`, writes the slot in the same pass."""
    th, tw = _launch_shape(y, packed, tile, "y")
    check_activation("x", x)
    if x.shape[:3] != y.shape[:3] or x.device != y.device or not x.is_contiguous():
        raise ValueError(f"refiner: x {list(x.shape)} must be contiguous and cover y's pixels {list(y.shape[:3])}")
    b, h, w, cy = y.shape
    check_cond(cond, y, packed.c1)
    check_channels(x, base_ch, hist_ch, mask_ch)
    check_out_buffer("out_rgb", out_rgb, (b, 3, h, w), torch.float32, x.device)
    check_slot(x, out, fmt, width, height)
    check_colours(x, ids, colours)
    if ids is not None and ids.dtype not in ID_DTYPES:
        raise ValueError(f"refiner kernel: ids of {ids.dtype} (it reads {', '.join(str(d) for d in ID_DTYPES)})")
    if out_rgb is None:
        out_rgb = torch.empty(b, 3, h, w, device=x.device, dtype=torch.float32)
    slot = slot_values(out, width, height, fmt) if out is not None else out_rgb
    grid = (triton.cdiv(h, th) * triton.cdiv(w, tw), b)
    _refine_kernel[grid](
        y, x, packed.w3, packed.b3, cond if cond is not None else packed.b3, packed.w1, packed.b1, out_rgb, slot,
        ids if ids is not None else out_rgb, colours if colours is not None else out_rgb,
        h, w, cy, x.shape[3], base_ch, hist_ch, mask_ch, height or 0, width or 0,
        *(ids.stride() if ids is not None else (0, 0, 0)), *(colours.stride() if colours is not None else (0, 0, 0)),
        CYP=packed.w3.shape[1], C1=packed.c1, C1P=packed.w3.shape[2], HAS_COND=cond is not None,
        HAS_COLOURS=colours is not None, ID_MASK=COLOUR_ROWS - 1,
        SLOT=SLOT_CODES[fmt] if out is not None else SLOT_NONE, TILE_H=th, TILE_W=tw, num_warps=num_warps)
    return out_rgb
