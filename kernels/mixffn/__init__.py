"""The Mix-FFN's depthwise conv + SiLU gate on channels-last tokens. `reference.py` is the spec;
`triton_kernel.py` the fast path, picked by `kernels.backend`."""

from __future__ import annotations

import torch

from ..backend import use_triton
from .reference import dwconv_gate as dwconv_gate_reference

__all__ = ["dwconv_gate", "dwconv_gate_reference"]


def dwconv_gate(e: torch.Tensor, grid: tuple[int, int], weight: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
    """See `reference.dwconv_gate`: silu(a) * b [N, T, h] of the 3x3 depthwise conv of e [N, T, 2h]."""
    tensors = tuple(a for a in (e, weight, bias) if a is not None)

    def unsupported():
        from .triton_kernel import unsupported as why_not

        return why_not(e)

    if use_triton("mixffn", tensors, unsupported):
        from .triton_kernel import dwconv_gate_triton

        return dwconv_gate_triton(e, grid, weight, bias)
    return dwconv_gate_reference(e, grid, weight, bias)
