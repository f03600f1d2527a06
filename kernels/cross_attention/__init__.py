"""Cross-attention to the prompt's short context. `reference.py` is the spec; `triton_kernel.py`
the fast path, picked by `kernels.backend`."""

from __future__ import annotations

import torch

from ..backend import use_triton
from .reference import cross_attention as cross_attention_reference

__all__ = ["cross_attention", "cross_attention_reference"]


def cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """See `reference.cross_attention`: o [N, H, T, d] (token-major memory on the fast path)."""
    def unsupported():
        from .triton_kernel import unsupported as why_not

        if v.stride(-1) != 1:
            return "the head dim of v is not contiguous"
        return why_not(q, k)

    if use_triton("cross_attention", (q, k, v, bias), unsupported):
        from .triton_kernel import cross_attention_triton

        return cross_attention_triton(q, k, v, bias)
    return cross_attention_reference(q, k, v, bias)
