"""Triton kernel for `reference.dwconv_gate`: channels-last 3x3 depthwise conv with the SiLU gate.

One program per (strip of ROWS grid rows, block of BLOCK_W tokens along a row, block of BLOCK_C
gate channels). It walks its strip downwards one input row at a time: each input row is loaded
once (three tiles, shifted by one token, which the L1 cache serves from the same lines) and adds
its three kernel rows to the two outputs it still feeds, so an output row is finished, gated and
stored one step after its last input arrives. Every input row reaches the program once, plus one
halo row above and below the strip (the first kernel read all three rows for each output row:
nine taps from L2 per element, which bound it at ~1 TB/s). The next row's loads are issued
before the current row's arithmetic, so a program always has a row in flight (waiting out each
row's latency in turn held it near a third of the card's bandwidth; benchmarks/NOTES.md v0.22).
float32 accumulation, one store.
Written for Triton 3.6 (the GPU machine) and 3.9 (the CPU interpreter in CI).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Tile: tokens along a grid row x gate channels, grid rows per strip, and warps per program
# (benchmarks/NOTES.md has the sweep that chose them).
BLOCK_W, BLOCK_C, ROWS, NUM_WARPS = 4, 64, 17, 4


@triton.jit
def _taps(w_ptr, ch, cm, DY: tl.constexpr):
    """Kernel row DY of the channels `ch`: three [1, BLOCK_C] float32 rows (left, centre, right)."""
    w0 = tl.load(w_ptr + ch * 9 + DY * 3 + 0, mask=cm, other=0.0).to(tl.float32)[None, :]
    w1 = tl.load(w_ptr + ch * 9 + DY * 3 + 1, mask=cm, other=0.0).to(tl.float32)[None, :]
    w2 = tl.load(w_ptr + ch * 9 + DY * 3 + 2, mask=cm, other=0.0).to(tl.float32)[None, :]
    return w0, w1, w2


@triton.jit
def _row(cols, col_ok, cm, j, TH, last, base, TW, c2, H, e_ptr, offs):
    """Input row j's six tiles, as stored: each half's left, centre and right neighbours. Rows
    outside the grid or past the strip's lower halo (`last`) load nothing (zeros)."""
    jj = cols * 0 + j
    row_ok = (jj >= 0) & (jj < TH) & (jj <= last)
    ml = ((col_ok[0] & row_ok)[:, None]) & cm[None, :]
    mc = ((col_ok[1] & row_ok)[:, None]) & cm[None, :]
    mr = ((col_ok[2] & row_ok)[:, None]) & cm[None, :]
    t = e_ptr + (base + j * TW) * c2 + offs
    return (tl.load(t - c2, mask=ml, other=0.0), tl.load(t, mask=mc, other=0.0), tl.load(t + c2, mask=mr, other=0.0),
            tl.load(t - c2 + H, mask=ml, other=0.0), tl.load(t + H, mask=mc, other=0.0),
            tl.load(t + c2 + H, mask=mr, other=0.0))


@triton.jit
def _dwconv_gate(e_ptr, w_ptr, b_ptr, o_ptr, TH, TW, H, STRIPS,
                 HAS_BIAS: tl.constexpr, ROWS: tl.constexpr, BLOCK_W: tl.constexpr,
                 BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    n = pid // STRIPS
    r0 = (pid % STRIPS) * ROWS
    cols = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    ch = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = ch < H
    c2 = 2 * H
    inside = cols < TW
    col_ok = (inside & (cols >= 1), inside, cols + 1 < TW)  # left, centre, right neighbour in the grid
    # The nine taps of each half, kept in registers for the whole strip.
    a00, a01, a02 = _taps(w_ptr, ch, cm, 0)
    a10, a11, a12 = _taps(w_ptr, ch, cm, 1)
    a20, a21, a22 = _taps(w_ptr, ch, cm, 2)
    b00, b01, b02 = _taps(w_ptr, ch + H, cm, 0)
    b10, b11, b12 = _taps(w_ptr, ch + H, cm, 1)
    b20, b21, b22 = _taps(w_ptr, ch + H, cm, 2)
    if HAS_BIAS:
        bias_a = tl.load(b_ptr + ch, mask=cm, other=0.0).to(tl.float32)[None, :]
        bias_b = tl.load(b_ptr + ch + H, mask=cm, other=0.0).to(tl.float32)[None, :]
    base = n.to(tl.int64) * TH * TW
    offs = cols[:, None] * c2 + ch[None, :]
    # prev: the output row above the input row (all but its last input); cur: the output row of
    # the input row (its first input only).
    prev_a = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    prev_b = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    cur_a = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    cur_b = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
    nla, nca, nra, nlb, ncb, nrb = _row(cols, col_ok, cm, r0 - 1, TH, r0 + ROWS, base, TW, c2, H, e_ptr, offs)
    for j in range(r0 - 1, r0 + ROWS + 1):
        la = nla.to(tl.float32)
        ca = nca.to(tl.float32)
        ra = nra.to(tl.float32)
        lb = nlb.to(tl.float32)
        cb = ncb.to(tl.float32)
        rb = nrb.to(tl.float32)
        # The next input row's loads are issued before this row's arithmetic, so they are in
        # flight while it runs (the program would otherwise wait out each row's latency).
        nla, nca, nra, nlb, ncb, nrb = _row(cols, col_ok, cm, j + 1, TH, r0 + ROWS, base, TW, c2, H, e_ptr,
                                            offs)
        jj = cols * 0 + j
        # Output row j - 1 takes its last input (kernel row 2) and is stored.
        done_a = prev_a + la * a20 + ca * a21 + ra * a22
        done_b = prev_b + lb * b20 + cb * b21 + rb * b22
        if HAS_BIAS:
            done_a += bias_a
            done_b += bias_b
        out = done_a * (1.0 / (1.0 + tl.exp(-done_a))) * done_b
        r = jj - 1
        om = (inside & (r >= r0) & (r < TH))[:, None] & cm[None, :]
        tl.store(o_ptr + (base + r[:, None] * TW + cols[:, None]) * H + ch[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=om)
        prev_a = cur_a + la * a10 + ca * a11 + ra * a12
        prev_b = cur_b + lb * b10 + cb * b11 + rb * b12
        cur_a = la * a00 + ca * a01 + ra * a02
        cur_b = lb * b00 + cb * b01 + rb * b02


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
    rows = max(1, min(ROWS, th))
    strips = triton.cdiv(th, rows)
    _dwconv_gate[(n * strips, triton.cdiv(tw, block_w), triton.cdiv(h, block_c))](
        e, w, bias if bias is not None else w, out, th, tw, h, strips, HAS_BIAS=bias is not None,
        ROWS=rows, BLOCK_W=block_w, BLOCK_C=block_c, num_warps=NUM_WARPS)
    return out
