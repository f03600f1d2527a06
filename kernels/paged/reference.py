"""Reference gather and scatter of fixed-size pages through a page table.

The pool is one preallocated [P, E] tensor; a session's state is the concatenation of its pages in
page-table order. Page ids are int64 device tensors, so no host sync is needed per frame.
"""

from __future__ import annotations

import torch


def paged_gather(pool: torch.Tensor, page_table: torch.Tensor, numel: int,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """Read a session's state. pool [P, E]; page_table [n] int64; returns [numel] (numel <= n*E),
    written into `out` ([numel], the pool's dtype) when given."""
    flat = pool.index_select(0, page_table).reshape(-1)[:numel]
    if out is None:
        return flat
    return out.copy_(flat)


def paged_scatter(pool: torch.Tensor, page_table: torch.Tensor, values: torch.Tensor,
                  keep: torch.Tensor | None = None) -> None:
    """Write a session's state in place. values [numel] with numel <= n*E; the tail page's unused
    elements are left as they were. `keep`, a 0-dim bool on the device, guards the write: where it
    is False the pool is left exactly as it was (decided on the device, no host read; a CUDA
    graph's refused frame)."""
    e = pool.shape[1]
    numel = values.numel()
    if keep is not None:
        values = torch.where(keep, values.reshape(-1).to(pool.dtype), paged_gather(pool, page_table, numel))
    full = numel // e
    if full:
        pool.index_copy_(0, page_table[:full], values[:full * e].view(full, e).to(pool.dtype))
    rest = numel - full * e
    if rest:
        pool[page_table[full], :rest] = values[full * e:].to(pool.dtype)
