"""Triton kernel for `reference.dwconv_gate`: channels-last 3x3 depthwise conv with the SiLU gate.

One program per (strip of ROWS grid rows, block of BLOCK_W tokens along them, block of BLOCK_C gate
channels). It walks down the strip's ROWS + 2 input rows; each input row is read once, as three
column-shifted [BLOCK_W, BLOCK_C] tiles per half (zero outside the grid), and added with the
matching tap weights into the three output rows it touches, kept as a rolling window of float32
accumulators. When an output row has all three of its input rows it is finished: bias,
silu(a) * b, one store. A one-row strip reads every input row three times (from cache); a strip of
R rows, (R + 2) / R times. Written for Triton 3.6 (the GPU machine) and 3.9 (the CPU interpreter).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Tile: grid rows per program, tokens along a row, gate channels; warps per program
# (benchmarks/NOTES.md has the sweep that chose them).
ROWS, BLOCK_W, BLOCK_C, NUM_WARPS = 4, 8, 128, 4


@triton.jit
def _dwconv_gate(e_ptr, w_ptr, b_ptr, o_ptr, TH, TW, H,
                 HAS_BIAS: tl.constexpr, ROWS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    strips = tl.cdiv(TH, ROWS)
    n = pid // strips
    row0 = (pid % strips) * ROWS
    cols = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    ch = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = ch < H
    c2 = 2 * H
    inside = cols < TW
    left, right = inside & (cols >= 1), cols + 1 < TW
    # the strip's first output row's tokens; every other row and tap is this tile moved by a scalar
    first = (n.to(tl.int64) * TH + row0) * TW
    tile = e_ptr + first * c2 + (cols[:, None] * c2 + ch[None, :])
    # weights of tap (dy, dx) for both halves: w[c, dy * 3 + dx]
    wa = w_ptr + ch * 9
    wb = w_ptr + (ch + H) * 9
    # rolling window: output rows i - 1, i, i + 1 relative to the input row i being read
    up_a = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    up_b = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    mid_a = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    mid_b = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    if HAS_BIAS:
        bias_a = tl.load(b_ptr + ch, mask=cm, other=0.0).to(tl.float32)[None, :]
        bias_b = tl.load(b_ptr + ch + H, mask=cm, other=0.0).to(tl.float32)[None, :]
    for i in range(-1, ROWS + 1):  # input rows row0 - 1 .. row0 + ROWS
        rr = cols * 0 + (row0 + i)  # the row as a vector: masks stay boolean vectors
        row_ok = (rr >= 0) & (rr < TH)
        down_a = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
        down_b = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
        for dx in tl.static_range(3):
            if dx == 0:
                cmask = left
            elif dx == 1:
                cmask = inside
            else:
                cmask = right
            m = (cmask & row_ok)[:, None] & cm[None, :]
            p = tile + (i * TW + (dx - 1)) * c2
            ea = tl.load(p, mask=m, other=0.0).to(tl.float32)
            eb = tl.load(p + H, mask=m, other=0.0).to(tl.float32)
            # this input row is tap dy = 2 for the row above, 1 for its own row, 0 for the row below
            up_a += ea * tl.load(wa + 6 + dx, mask=cm, other=0.0).to(tl.float32)[None, :]
            up_b += eb * tl.load(wb + 6 + dx, mask=cm, other=0.0).to(tl.float32)[None, :]
            mid_a += ea * tl.load(wa + 3 + dx, mask=cm, other=0.0).to(tl.float32)[None, :]
            mid_b += eb * tl.load(wb + 3 + dx, mask=cm, other=0.0).to(tl.float32)[None, :]
            down_a += ea * tl.load(wa + dx, mask=cm, other=0.0).to(tl.float32)[None, :]
            down_b += eb * tl.load(wb + dx, mask=cm, other=0.0).to(tl.float32)[None, :]
        # output row i - 1 now has all three input rows: finish and store it
        ro = cols * 0 + (row0 + i - 1)
        keep = (ro >= row0) & (ro < TH) & inside
        if HAS_BIAS:
            fa = up_a + bias_a
            fb = up_b + bias_b
        else:
            fa = up_a
            fb = up_b
        out = fa * (1.0 / (1.0 + tl.exp(-fa))) * fb
        optr = o_ptr + (first + (i - 1) * TW) * H + (cols[:, None] * H + ch[None, :])
        tl.store(optr, out.to(o_ptr.dtype.element_ty), mask=keep[:, None] & cm[None, :])
        up_a, up_b = mid_a, mid_b
        mid_a, mid_b = down_a, down_b


def unsupported(e: torch.Tensor) -> str | None:
    if e.shape[-1] % 2:
        return f"{e.shape[-1]} channels do not split into two halves"
    return None


def dwconv_gate_triton(e: torch.Tensor, grid: tuple[int, int], weight: torch.Tensor, bias: torch.Tensor | None,
                       out: torch.Tensor | None = None) -> torch.Tensor:
    """Same contract as `reference.dwconv_gate`. `out` may give a preallocated [N, T, h] buffer."""
    n, t, c2 = e.shape
    th, tw = grid
    if th * tw != t:
        raise ValueError(f"grid {grid} does not hold {t} tokens")
    why = unsupported(e)
    if why:
        raise ValueError(why)
    h = c2 // 2
    e = e.contiguous()
    w = weight.reshape(c2, 9).contiguous()
    if out is None:
        out = torch.empty((n, t, h), device=e.device, dtype=e.dtype)
    rows = max(1, min(ROWS, th))
    block_w = min(BLOCK_W, triton.next_power_of_2(tw))
    block_c = min(BLOCK_C, triton.next_power_of_2(h))
    _dwconv_gate[(n * triton.cdiv(th, rows), triton.cdiv(tw, block_w), triton.cdiv(h, block_c))](
        e, w, bias if bias is not None else w, out, th, tw, h, HAS_BIAS=bias is not None,
        ROWS=rows, BLOCK_W=block_w, BLOCK_C=block_c, num_warps=NUM_WARPS)
    return out
