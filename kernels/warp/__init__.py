"""Motion-vector warp of the previous latent with the disocclusion test. `reference.py` is the
spec; `triton_kernel.py` the fast path, picked by `kernels.backend`."""

from __future__ import annotations

import torch

from ..backend import use_triton
from .reference import warp_previous as warp_previous_reference

__all__ = ["warp_previous", "warp_previous_reference"]


def warp_previous(prev_latent: torch.Tensor, prev_depth: torch.Tensor, motion: torch.Tensor,
                  depth: torch.Tensor, tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """See `reference.warp_previous`: warped [B, C, h, w] and valid [B, 1, h, w] bool."""
    def unsupported():
        from .triton_kernel import unsupported as why_not

        return why_not(prev_latent)

    if use_triton("warp", (prev_latent, prev_depth, motion, depth), unsupported):
        from .triton_kernel import warp_previous_triton

        return warp_previous_triton(prev_latent, prev_depth, motion, depth, tolerance)
    return warp_previous_reference(prev_latent, prev_depth, motion, depth, tolerance)
