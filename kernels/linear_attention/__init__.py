"""ReLU linear attention with decayed temporal state. `reference.py` is the spec;
`triton_kernel.py` the fast path for one frame, picked by `kernels.backend`."""

from __future__ import annotations

import torch

from ..backend import use_triton
from .reference import linear_attention as linear_attention_reference
from .reference import linear_attention_causal

__all__ = ["linear_attention", "linear_attention_causal", "linear_attention_reference"]


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_state: torch.Tensor,
                     k_state: torch.Tensor, decay: torch.Tensor, eps: float):
    """One frame. q, k, v [B, H, T, d]; kv_state [B, H, d, d]; k_state [B, H, d]; decay [H].
    Returns o [B, H, T, d] (q's dtype), new kv_state, new k_state (float32)."""
    def unsupported():
        from .triton_kernel import unsupported as why_not

        return why_not(q)

    if use_triton("linear_attention", (q, k, v, kv_state, k_state, decay), unsupported):
        from .triton_kernel import linear_attention_triton

        return linear_attention_triton(q, k, v, kv_state, k_state, decay, eps)
    return linear_attention_reference(q, k, v, kv_state, k_state, decay, eps)
