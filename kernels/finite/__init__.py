"""The frame's finiteness test (no NaN or infinity in the G-buffer planes). `reference.py` is the
spec; `triton_kernel.py` the fast path, picked by `kernels.backend`."""

from __future__ import annotations

from typing import Sequence

import torch

from ..backend import use_triton
from .reference import all_finite as all_finite_reference

__all__ = ["all_finite", "all_finite_reference"]


def all_finite(planes: Sequence[torch.Tensor]) -> torch.Tensor:
    """See `reference.all_finite`: a 0-dim bool on the device, True when every value is finite."""
    planes = list(planes)

    def unsupported():
        from .triton_kernel import unsupported as why_not

        return why_not(planes)

    if planes and use_triton("all_finite", tuple(planes), unsupported):
        from .triton_kernel import all_finite_triton

        return all_finite_triton(planes)
    return all_finite_reference(planes)
