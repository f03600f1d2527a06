"""Triton kernel for `reference.quantize_rows`: one read of the activation, one write of the FP8
values and the row scales (eager PyTorch takes five passes: abs, max, cast, divide, clamp + cast).
GPU only: the CPU interpreter does not round to float8 the way the hardware does, and on the CPU
the FP8 layers run their emulated product anyway. Written for Triton 3.6."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import FP8, FP8_MAX


@triton.jit
def _quantize_rows(x_ptr, q_ptr, s_ptr, M, K, FMAX: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_K)
    rm = rows < M
    m = rm[:, None] & (cols < K)[None, :]
    off = rows.to(tl.int64)[:, None] * K + cols[None, :]
    x = tl.load(x_ptr + off, mask=m, other=0.0).to(tl.float32)
    scale = tl.maximum(tl.max(tl.abs(x), axis=1), 1e-12) / FMAX
    q = tl.minimum(tl.maximum(x / scale[:, None], -FMAX), FMAX)
    tl.store(q_ptr + off, q.to(q_ptr.dtype.element_ty), mask=m)
    tl.store(s_ptr + rows, scale, mask=rm)


def unsupported(x: torch.Tensor) -> str | None:
    if not x.is_cuda:
        return "the FP8 rounding of the CPU interpreter differs from the hardware's"
    if x.dim() != 2:
        return f"{x.dim()}-d input (rows x features expected)"
    if x.shape[1] > 16384:
        return f"rows of {x.shape[1]} features are over 16384"
    return None


def quantize_rows_triton(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m, k = x.shape
    x = x.contiguous()
    q = torch.empty((m, k), device=x.device, dtype=FP8)
    scale = torch.empty((m, 1), device=x.device, dtype=torch.float32)
    block_k = triton.next_power_of_2(k)
    block_m = max(1, min(16, 4096 // block_k))
    _quantize_rows[(triton.cdiv(m, block_m),)](x, q, scale, m, k, FMAX=FP8_MAX, BLOCK_M=block_m, BLOCK_K=block_k,
                                               num_warps=4 if block_k <= 2048 else 8)
    return q, scale
