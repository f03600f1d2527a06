"""Row-wise FP8 quantization. `reference.py` is the spec; `triton_kernel.py` the fast path on a
GPU, picked by `kernels.backend`."""

from __future__ import annotations

import torch

from ..backend import use_triton
from .reference import FP8, FP8_MAX
from .reference import quantize_rows as quantize_rows_reference

__all__ = ["FP8", "FP8_MAX", "quantize_rows", "quantize_rows_reference"]


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """See `reference.quantize_rows`: (q [M, K] float8 e4m3, scale [M, 1] float32)."""
    def unsupported():
        from .triton_kernel import unsupported as why_not

        return why_not(x)

    if x.is_cuda and use_triton("quantize", (x,), unsupported):
        from .triton_kernel import quantize_rows_triton

        return quantize_rows_triton(x)
    return quantize_rows_reference(x)
