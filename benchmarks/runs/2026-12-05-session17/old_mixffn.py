"""Triton kernel for `reference.dwconv_gate`: channels-last 3x3 depthwise conv with the SiLU gate.

One program per (image row of tokens, block of BLOCK_W tokens along it, block of BLOCK_C gate
channels): nine shifted [BLOCK_W, BLOCK_C] tiles of each half (zero outside the grid), float32
accumulation, bias, silu(a) * b, one store. Neighbouring programs read overlapping rows, which the
L2 cache serves. Written for Triton 3.6 (the GPU machine) and 3.9 (the CPU interpreter in CI).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Tile: tokens along a grid row x gate channels, and warps per program (benchmarks/NOTES.md has the
# sweep that chose them).
BLOCK_W, BLOCK_C, NUM_WARPS = 8, 128, 4


@triton.jit
def _dwconv_gate(e_ptr, w_ptr, b_ptr, o_ptr, TH, TW, H,
                 HAS_BIAS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    n = pid // TH
    row = pid % TH
    cols = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    ch = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = ch < H
    c2 = 2 * H
    # One pointer tile for the centre tap; every other tap is the same tile moved by a scalar.
    centre = (n.to(tl.int64) * TH + row) * TW
    tile = e_ptr + centre * c2 + (cols[:, None] * c2 + ch[None, :])
    inside = cols < TW
    col_ok = (inside & (cols >= 1), inside, cols + 1 < TW)  # left, centre, right neighbour in the grid
    acc_a = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    for dy in tl.static_range(3):
        rr = cols * 0 + (row + dy - 1)  # the row as a vector: masks stay boolean vectors
        row_ok = (rr >= 0) & (rr < TH)
        for dx in tl.static_range(3):
            m = (col_ok[dx] & row_ok)[:, None] & cm[None, :]
            p = tile + ((dy - 1) * TW + (dx - 1)) * c2
            ea = tl.load(p, mask=m, other=0.0).to(tl.float32)
            eb = tl.load(p + H, mask=m, other=0.0).to(tl.float32)
            wa = tl.load(w_ptr + ch * 9 + dy * 3 + dx, mask=cm, other=0.0).to(tl.float32)
            wb = tl.load(w_ptr + (ch + H) * 9 + dy * 3 + dx, mask=cm, other=0.0).to(tl.float32)
            acc_a += ea * wa[None, :]
            acc_b += eb * wb[None, :]
    if HAS_BIAS:
        acc_a += tl.load(b_ptr + ch, mask=cm, other=0.0).to(tl.float32)[None, :]
        acc_b += tl.load(b_ptr + ch + H, mask=cm, other=0.0).to(tl.float32)[None, :]
    out = acc_a * (1.0 / (1.0 + tl.exp(-acc_a))) * acc_b
    om = (cols < TW)[:, None] & cm[None, :]
    tl.store(o_ptr + centre * H + (cols[:, None] * H + ch[None, :]), out.to(o_ptr.dtype.element_ty), mask=om)


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
    block_w = min(BLOCK_W, triton.next_power_of_2(tw))
    block_c = min(BLOCK_C, triton.next_power_of_2(h))
    _dwconv_gate[(n * th, triton.cdiv(tw, block_w), triton.cdiv(h, block_c))](
        e, w, bias if bias is not None else w, out, th, tw, h, HAS_BIAS=bias is not None,
        BLOCK_W=block_w, BLOCK_C=block_c, num_warps=NUM_WARPS)
    return out
