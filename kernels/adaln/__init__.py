"""The block's token-wise glue (gated residual + LayerNorm + adaLN modulate) in one pass.
`reference.py` is the spec; `triton_kernel.py` the fast path, picked by `kernels.backend`."""

from __future__ import annotations

import torch

from ..backend import use_triton
from .reference import residual_norm as residual_norm_reference

__all__ = ["residual_norm", "residual_norm_reference"]


def residual_norm(x: torch.Tensor, delta: torch.Tensor | None = None, mod: torch.Tensor | None = None,
                  gate_table: torch.Tensor | None = None, gate: int | None = None,
                  norm: str | None = "modulate", norm_table: torch.Tensor | None = None,
                  shift: int | None = None, scale: int | None = None, weight: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None, eps: float = 1e-6):
    """See `reference.residual_norm`: (r, y) with r = x + gate * delta and y its (modulated) norm."""
    args = (x, delta, mod, gate_table, gate, norm, norm_table, shift, scale, weight, bias, eps)
    tensors = tuple(a for a in (x, delta, mod, gate_table, norm_table, weight, bias) if a is not None)

    def unsupported():
        from .triton_kernel import unsupported as why_not

        return why_not(x)

    if use_triton("adaln", tensors, unsupported):
        from .triton_kernel import residual_norm_triton

        return residual_norm_triton(*args)
    return residual_norm_reference(*args)
