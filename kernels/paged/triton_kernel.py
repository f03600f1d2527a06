"""Triton kernels for paged gather and scatter: one launch each, element i of the session's state
at pool[page_table[i // E], i % E]. The reference needs an index_select (or index_copy) plus a
separate tail write; here the tail is just the mask. The scatter's optional guard (`keep`, a device
bool) is read by every program, which then stores nothing when it is False."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _gather_kernel(pool_ptr, table_ptr, out_ptr, numel, E, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    page = tl.load(table_ptr + offs // E, mask=mask, other=0)
    val = tl.load(pool_ptr + page * E + offs % E, mask=mask)
    tl.store(out_ptr + offs, val.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _scatter_kernel(pool_ptr, table_ptr, src_ptr, keep_ptr, numel, E, HAS_KEEP: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    limit = numel
    if HAS_KEEP:  # a refused frame stores nothing: its limit is 0 (one comparison, the same mask type
        limit = numel * tl.load(keep_ptr).to(tl.int64)  # on every Triton: 3.9's interpreter refuses a
    mask = offs < limit  # mask made with `&` of a block and a loaded scalar)
    page = tl.load(table_ptr + offs // E, mask=mask, other=0)
    val = tl.load(src_ptr + offs, mask=mask)
    tl.store(pool_ptr + page * E + offs % E, val.to(pool_ptr.dtype.element_ty), mask=mask)


def unsupported(pool: torch.Tensor, page_table: torch.Tensor) -> str | None:
    if pool.dim() != 2 or not pool.is_contiguous():
        return "the pool must be a contiguous [P, E] tensor"
    if page_table.dtype not in (torch.int32, torch.int64):
        return f"page ids must be int32 or int64, not {page_table.dtype}"
    return None


def _check(pool, page_table, numel):
    why = unsupported(pool, page_table)
    if why is not None:
        raise ValueError(f"paged kernel: {why}")
    if numel > page_table.numel() * pool.shape[1]:
        raise ValueError(f"paged kernel: {numel} elements do not fit {page_table.numel()} pages of {pool.shape[1]}")


def paged_gather_triton(pool: torch.Tensor, page_table: torch.Tensor, numel: int,
                        out: torch.Tensor | None = None) -> torch.Tensor:
    _check(pool, page_table, numel)
    if out is None:
        out = torch.empty(numel, dtype=pool.dtype, device=pool.device)
    _gather_kernel[(triton.cdiv(numel, BLOCK),)](pool, page_table.contiguous(), out, numel, pool.shape[1], BLOCK=BLOCK)
    return out


def paged_scatter_triton(pool: torch.Tensor, page_table: torch.Tensor, values: torch.Tensor,
                         keep: torch.Tensor | None = None) -> None:
    numel = values.numel()
    _check(pool, page_table, numel)
    if keep is not None and (keep.numel() != 1 or keep.dtype != torch.bool or keep.device != pool.device):
        raise ValueError(f"paged kernel: keep must be one bool on {pool.device}, got {keep.dtype} [{keep.numel()}] on {keep.device}")
    src = values.reshape(-1).contiguous()
    guard = keep.reshape(1).view(torch.uint8) if keep is not None else src  # (unread without a guard)
    _scatter_kernel[(triton.cdiv(numel, BLOCK),)](pool, page_table.contiguous(), src, guard, numel, pool.shape[1],
                                                  HAS_KEEP=keep is not None, BLOCK=BLOCK)
