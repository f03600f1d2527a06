"""G-buffer packing: engine formats in, normalised conditioning out. `reference.py` is the spec;
`triton_kernel.py` the fast path (one pass per plane, normalise and downsample fused), picked by
`kernels.backend`."""

from __future__ import annotations

from typing import Sequence

import torch

from ..backend import use_triton
from .reference import PackKind, PackSpec
from .reference import pack_gbuffers as pack_gbuffers_reference

__all__ = ["PackKind", "PackSpec", "pack_gbuffers", "pack_gbuffers_reference"]


def pack_gbuffers(planes: Sequence[torch.Tensor], specs: Sequence[PackSpec],
                  down: int) -> tuple[torch.Tensor, torch.Tensor]:
    """See `reference.pack_gbuffers`: full [B, C, H, W] and low [B, C, H/down, W/down] float32."""
    def unsupported():
        from .triton_kernel import unsupported as why_not

        return why_not(planes)

    if use_triton("gbuffer_pack", tuple(planes), unsupported):
        from .triton_kernel import pack_gbuffers_triton

        return pack_gbuffers_triton(planes, specs, down)
    return pack_gbuffers_reference(planes, specs, down)
