"""Reference for the frame's finiteness test: whether every value of some G-buffer planes is finite.

Planes are the layout's views over a slot: [H, W, C] float tensors whose rows may be padded (row
pitch) but whose W * C values within a row are contiguous. The answer stays on the device (a 0-dim
bool), so that a CUDA graph can hold the test and the host reads it only when it must.
"""

from __future__ import annotations

from typing import Sequence

import torch


def all_finite(planes: Sequence[torch.Tensor]) -> torch.Tensor:
    """0-dim bool on the planes' device: True when no plane holds NaN or +-infinity."""
    if not planes:
        raise ValueError("all_finite needs at least one plane")
    return torch.stack([torch.isfinite(p).all() for p in planes]).all()
