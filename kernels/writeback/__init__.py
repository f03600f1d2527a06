"""The write-back into the engine's output format (RGBA8 or RGBA16F). `reference.py` is the spec;
`triton_kernel.py` the fast path, picked by `kernels.backend`."""

from __future__ import annotations

import torch

from ..backend import use_triton
from .reference import FORMATS, output_bytes
from .reference import write_rgba as write_rgba_reference

__all__ = ["FORMATS", "output_bytes", "write_rgba", "write_rgba_reference"]


def write_rgba(rgb: torch.Tensor, out: torch.Tensor, fmt: str) -> None:
    """See `reference.write_rgba`: rgb [3, H, W] in [0, 1] into the slot's bytes `out`."""
    def unsupported():
        from .triton_kernel import unsupported as why_not

        return why_not(rgb)

    if use_triton("writeback", (rgb, out), unsupported):
        from .triton_kernel import write_rgba_triton

        return write_rgba_triton(rgb, out, fmt)
    return write_rgba_reference(rgb, out, fmt)
