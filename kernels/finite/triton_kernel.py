"""Triton kernel for `reference.all_finite`: each plane read once (the reference reads it, writes a
bool per value and reads those again), the count of non-finite values per row block added to one
int32 counter only where it is not zero. Written for Triton 3.6 (the GPU machine) and 3.9 (the CPU
interpreter in CI).
"""

from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

BLOCK = 2048


@triton.jit
def _count_nonfinite(x_ptr, flag_ptr, row_len, pitch, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < row_len
    v = tl.load(x_ptr + row.to(tl.int64) * pitch + offs, mask=m, other=0.0).to(tl.float32)
    bad = (tl.abs(v) < float("inf")) == 0  # NaN compares false, so it counts too
    n = tl.sum(bad.to(tl.int32), axis=0)
    if n > 0:
        tl.atomic_add(flag_ptr, n)


def unsupported(planes: Sequence[torch.Tensor]) -> str | None:
    for p in planes:
        if not p.is_floating_point():
            return f"a {p.dtype} plane has no non-finite values to look for"
        if p.dim() != 3 or p.stride(2) != 1 or p.stride(1) != p.shape[2]:
            return f"plane {tuple(p.shape)} with strides {p.stride()} is not rows of contiguous values"
    return None


def all_finite_triton(planes: Sequence[torch.Tensor]) -> torch.Tensor:
    if not planes:
        raise ValueError("all_finite needs at least one plane")
    why = unsupported(planes)
    if why:
        raise ValueError(why)
    count = torch.zeros(1, dtype=torch.int32, device=planes[0].device)
    for p in planes:
        h, w, c = p.shape
        _count_nonfinite[(h, triton.cdiv(w * c, BLOCK))](p, count, w * c, p.stride(0), BLOCK=BLOCK)
    return count[0] == 0
