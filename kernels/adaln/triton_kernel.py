"""Triton kernel for `reference.residual_norm`: one pass per block of token rows.

Each program takes BLOCK_M rows of width D (padded to a power of two): loads x, delta and the
modulation rows it needs (`mod` [M, S, D] plus the block's table, added in registers), forms the
residual, rounds it to the activation dtype (as the unfused model stores it), normalises in float32
and applies the affine or adaLN transform. Which parts run is fixed at compile time, so each use in
the block is its own specialised kernel. Written for Triton 3.6 (the GPU machine) and 3.9 (the CPU
interpreter in CI).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

NORMS = {None: 0, "affine": 1, "modulate": 2}


@triton.jit
def _residual_norm(x_ptr, d_ptr, mod_ptr, gtab_ptr, ntab_ptr, w_ptr, b_ptr, r_ptr, y_ptr,
                   M, D, S, gate, shift, scale, eps,
                   HAS_DELTA: tl.constexpr, HAS_GATE: tl.constexpr, HAS_GTAB: tl.constexpr,
                   NORM: tl.constexpr, HAS_NTAB: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    rm = rows < M
    cm = cols < D
    m = rm[:, None] & cm[None, :]
    rows64 = rows.to(tl.int64)
    off = rows64[:, None] * D + cols[None, :]
    moff = rows64[:, None] * S * D + cols[None, :]  # row 0 of each token's modulation
    x = tl.load(x_ptr + off, mask=m, other=0.0)
    out_ty = x.dtype
    r = x.to(tl.float32)
    if HAS_DELTA:
        delta = tl.load(d_ptr + off, mask=m, other=0.0).to(tl.float32)
        if HAS_GATE:
            g = tl.load(mod_ptr + moff + gate * D, mask=m, other=0.0).to(tl.float32)
            if HAS_GTAB:
                g += tl.load(gtab_ptr + gate * D + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
            delta = g * delta
        r = (r + delta).to(out_ty)
        tl.store(r_ptr + off, r, mask=m)
        r = r.to(tl.float32)
    if NORM > 0:
        mean = tl.sum(r, axis=1) / D
        c = tl.where(m, r - mean[:, None], 0.0)
        var = tl.sum(c * c, axis=1) / D
        y = c * (1.0 / tl.sqrt(var + eps))[:, None]
        if NORM == 1:
            if HAS_W:
                y = y * tl.load(w_ptr + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
            if HAS_B:
                y = y + tl.load(b_ptr + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
        else:
            sc = tl.load(mod_ptr + moff + scale * D, mask=m, other=0.0).to(tl.float32)
            sh = tl.load(mod_ptr + moff + shift * D, mask=m, other=0.0).to(tl.float32)
            if HAS_NTAB:
                sc += tl.load(ntab_ptr + scale * D + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
                sh += tl.load(ntab_ptr + shift * D + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
            y = y * (1.0 + sc) + sh
        tl.store(y_ptr + off, y.to(out_ty), mask=m)


def unsupported(x: torch.Tensor) -> str | None:
    if x.shape[-1] > 8192:
        return f"width {x.shape[-1]} is over 8192"
    return None


def residual_norm_triton(x, delta=None, mod=None, gate_table=None, gate=None, norm="modulate", norm_table=None,
                         shift=None, scale=None, weight=None, bias=None, eps=1e-6, outputs=None):
    """Same contract as `reference.residual_norm`. `outputs` may give preallocated (r, y) buffers
    (tests poison them with NaN)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be None, 'affine' or 'modulate', not {norm!r}")
    n, t, d = x.shape
    rows = n * t
    x = x.contiguous()
    delta = None if delta is None else delta.contiguous()
    uses_mod = gate is not None or norm == "modulate"
    if uses_mod:
        mod = mod.contiguous()
        if tuple(mod.shape[:2]) != (n, t) or mod.shape[-1] != d:
            raise ValueError(f"mod {tuple(mod.shape)} does not match x {tuple(x.shape)}")
    s = mod.shape[2] if uses_mod else 1
    r_out, y_out = outputs if outputs is not None else (None, None)
    if delta is not None:
        r = torch.empty_like(x) if r_out is None else r_out
    else:
        r = x
    y = None
    if norm is not None:
        y = torch.empty_like(x) if y_out is None else y_out
    block_d = triton.next_power_of_2(d)
    block_m = max(1, min(16, 4096 // block_d))
    dummy = x
    _residual_norm[(triton.cdiv(rows, block_m),)](
        x, delta if delta is not None else dummy, mod if uses_mod else dummy,
        gate_table if gate_table is not None else dummy, norm_table if norm_table is not None else dummy,
        weight if weight is not None else dummy, bias if bias is not None else dummy,
        r, y if y is not None else dummy, rows, d, s, gate or 0, shift or 0, scale or 0, float(eps),
        HAS_DELTA=delta is not None, HAS_GATE=gate is not None, HAS_GTAB=gate_table is not None,
        NORM=NORMS[norm], HAS_NTAB=norm_table is not None, HAS_W=weight is not None, HAS_B=bias is not None,
        BLOCK_M=block_m, BLOCK_D=block_d, num_warps=4 if block_d <= 1024 else 8)
    return r, y
