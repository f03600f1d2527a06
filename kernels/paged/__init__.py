"""Paged gather/scatter of session state by page table. `reference.py` is the spec;
`triton_kernel.py` the fast path, picked by `kernels.backend`."""

from __future__ import annotations

import torch

from ..backend import use_triton
from .reference import paged_gather as paged_gather_reference
from .reference import paged_scatter as paged_scatter_reference

__all__ = ["paged_gather", "paged_scatter", "paged_gather_reference", "paged_scatter_reference"]


def _unsupported(pool, page_table):
    def why():
        from .triton_kernel import unsupported

        return unsupported(pool, page_table)
    return why


def paged_gather(pool: torch.Tensor, page_table: torch.Tensor, numel: int,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """A session's state: [numel] read through its page table (see `reference.paged_gather`),
    into `out` when given."""
    if use_triton("paged_gather", (pool, page_table), _unsupported(pool, page_table)):
        from .triton_kernel import paged_gather_triton

        return paged_gather_triton(pool, page_table, numel, out=out)
    return paged_gather_reference(pool, page_table, numel, out=out)


def paged_scatter(pool: torch.Tensor, page_table: torch.Tensor, values: torch.Tensor,
                  keep: torch.Tensor | None = None) -> None:
    """Write a session's state in place through its page table, only where the device bool `keep`
    (when given) is True (see `reference.paged_scatter`)."""
    tensors = (pool, page_table, values) + ((keep,) if keep is not None else ())
    if use_triton("paged_scatter", tensors, _unsupported(pool, page_table)):
        from .triton_kernel import paged_scatter_triton

        paged_scatter_triton(pool, page_table, values, keep=keep)
        return
    paged_scatter_reference(pool, page_table, values, keep=keep)
