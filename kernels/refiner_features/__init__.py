"""The refiner's per-pixel input x [B, H, W, Cin]: the upsampled latent, the guide, the masked
history, its mask, four position channels, the object id's embedding and the surface's Fourier
features, channels-last (formulas and channel order: `reference.py`'s docstring, `feature_channels`).

`reference.py` is the spec (differentiable, what training runs); `triton_kernel.py` writes x in
one pass, picked by `kernels.backend` (Triton for CUDA tensors without gradients, the reference
otherwise). The id table and the surface Linear's parameters are read in place: nothing to pack.
"""

from __future__ import annotations

import torch

from ..backend import use_triton
from .reference import ID_BUCKETS, FeatureChannels, check_features, feature_channels
from .reference import refiner_features as refiner_features_reference

__all__ = ["ID_BUCKETS", "FeatureChannels", "feature_channels", "refiner_features", "refiner_features_reference"]


def refiner_features(latent: torch.Tensor, guide: torch.Tensor, history: torch.Tensor, mask: torch.Tensor,
                     ids: torch.Tensor | None, surface: torch.Tensor | None, id_table: torch.Tensor | None,
                     surface_weight: torch.Tensor | None, surface_bias: torch.Tensor | None, stride: int,
                     width: int, height: int, dtype: torch.dtype, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """x [B, H, W, Cin] contiguous in `dtype` (into `out`, a contiguous tensor of that shape and
    dtype, when given). latent [B, 3, h, w]; guide [B, Cg, H, W] (any float dtype and strides);
    history [B, 3, H, W] in [0, 1]; mask [B, 1, H, W]; ids [B, H, W] integer or None; surface
    [B, H, W, 3] or None; id_table [256, E] or None; surface_weight [F, 3] and surface_bias [F], or
    None; H x W = stride x the latent's size; width x height the frame's real size (<= W x H).
    Raises ValueError for inputs that do not fit together, before any work."""
    check_features(latent, guide, history, mask, ids, surface, id_table, surface_weight, surface_bias, stride,
                   width, height, dtype, out)
    tensors = tuple(t for t in (latent, guide, history, mask, ids, surface, id_table, surface_weight, surface_bias)
                    if t is not None)

    def unsupported():
        from .triton_kernel import unsupported as why_not

        return why_not(guide, ids, id_table, surface_weight)

    if use_triton("refiner_features", tensors, unsupported):
        from .triton_kernel import refiner_features_triton

        return refiner_features_triton(latent, guide, history, mask, ids, surface, id_table, surface_weight,
                                       surface_bias, stride, width, height, dtype, out=out)
    x = refiner_features_reference(latent, guide, history, mask, ids, surface, id_table, surface_weight,
                                   surface_bias, stride, width, height, dtype)
    return out.copy_(x) if out is not None else x

