"""The full-resolution guided refiner's two stages (the formulas: `reference.py`'s docstring).

`conv3x3_mlp` (a 3x3 conv, per-image bias, SiLU, a 1x1 layer) and `refine_composite` (the same
with four outputs, then the history composite, planar RGB and, optionally, the engine's output
slot). `reference.py` is the spec (differentiable, what training runs); `triton_kernel.py` the
fused fast path, one pass per stage, picked by `kernels.backend` (Triton for CUDA tensors without
gradients, the reference otherwise).
"""

from __future__ import annotations

import torch

from ..backend import use_triton
from .reference import check_conv3x3_mlp, check_refine_composite
from .reference import conv3x3_mlp as conv3x3_mlp_reference
from .reference import refine_composite as refine_composite_reference

__all__ = ["conv3x3_mlp", "conv3x3_mlp_reference", "refine_composite", "refine_composite_reference"]


def _packed(op: str, params: tuple[torch.Tensor, ...], dtype: torch.dtype, cache: dict | None):
    """The layer's weights packed for the kernel, made once per weight version and activation
    dtype and kept in the caller's `cache` (the layer module's own dict, so it dies with it): a
    look-up per frame, and no allocation inside a CUDA graph capture after the first frame. Entries
    are per op, so one dict may serve one stage-1 and one stage-2 layer; give each layer its own."""
    from .triton_kernel import pack_conv3x3_mlp, pack_refine

    key = (dtype,) + tuple((p.data_ptr(), p._version, p.dtype, p.device, tuple(p.shape)) for p in params)
    hit = cache.get(op) if cache is not None else None
    if hit is not None and hit[0] == key:
        return hit[1]
    packed = (pack_conv3x3_mlp if op == "conv3x3_mlp" else pack_refine)(*params, dtype)
    if cache is not None:
        cache[op] = (key, packed)
    return packed


def conv3x3_mlp(x: torch.Tensor, w3: torch.Tensor, b3: torch.Tensor, cond: torch.Tensor | None,
                w1: torch.Tensor, b1: torch.Tensor, act_out: bool = True, *,
                out_y: torch.Tensor | None = None, cache: dict | None = None) -> torch.Tensor:
    """Stage 1: y = [SiLU](SiLU(conv3x3(x) + b3 + cond[b]) @ w1^T + b1).

    x [B, H, W, Cin] channels-last; w3 [C1, Cin, 3, 3]; b3 [C1]; cond [B, C1] or None;
    w1 [C2, C1]; b1 [C2]. Returns y [B, H, W, C2] in x's dtype (written into `out_y`, a contiguous
    [B, H, W, C2] of x's dtype, when given). `cache`: a dict owned by the calling layer for the
    kernel's packed weights. Raises ValueError for inputs that do not fit together."""
    check_conv3x3_mlp(x, w3, b3, cond, w1, b1, out_y)
    params = (w3, b3, w1, b1)
    tensors = (x,) + params + ((cond,) if cond is not None else ())

    def unsupported():
        from .triton_kernel import unsupported as why_not

        return why_not(x, w3, w1)

    if use_triton("refiner", tensors, unsupported):
        from .triton_kernel import conv3x3_mlp_triton

        return conv3x3_mlp_triton(x, _packed("conv3x3_mlp", params, x.dtype, cache), cond, act_out, out_y)
    return conv3x3_mlp_reference(x, w3, b3, cond, w1, b1, act_out, out_y=out_y)


def refine_composite(y: torch.Tensor, x: torch.Tensor, w3: torch.Tensor, b3: torch.Tensor,
                     cond: torch.Tensor | None, w1: torch.Tensor, b1: torch.Tensor,
                     base_ch: int, hist_ch: int, mask_ch: int, width: int | None = None, height: int | None = None,
                     out: torch.Tensor | None = None, fmt: str | None = None, *,
                     out_rgb: torch.Tensor | None = None, cache: dict | None = None,
                     ids: torch.Tensor | None = None, colours: torch.Tensor | None = None) -> torch.Tensor:
    """Stage 2: the last conv layer (four outputs: residual RGB, history logit) and the composite
    rgb = clamp(fresh + sigmoid(a) * m * (hist - fresh), 0, 1), fresh = (x[base] + 1) / 2 + res
    (+ colours[b, ids & 255] with object colours: ids [B, H, W] integer, colours [B, 256, 3]),
    hist = (x[hist] + 1) / 2, m = x[mask].

    y [B, H, W, Cy]; x [B, H, W, Cin] (base_ch, hist_ch: first of three channels; mask_ch: one);
    w3 [C1, Cy, 3, 3]; b3 [C1]; cond [B, C1] or None; w1 [4, C1]; b1 [4]. Returns rgb
    [B, 3, H, W] float32 over the whole H x W (into `out_rgb` when given). With `out` (an engine
    output slot's uint8 bytes) and `fmt` ("rgba8" / "rgba16f"), B == 1: the top-left `width` x
    `height` pixels are also written there as interleaved RGBA, alpha 1 (on a GPU in the same
    pass). Raises ValueError for inputs that do not fit together, before any work."""
    check_refine_composite(y, x, w3, b3, cond, w1, b1, base_ch, hist_ch, mask_ch, width, height, out, fmt, out_rgb,
                           ids, colours)
    params = (w3, b3, w1, b1)
    tensors = (y, x) + params + tuple(t for t in (cond, out, ids, colours) if t is not None)

    def unsupported():
        from .triton_kernel import ID_DTYPES
        from .triton_kernel import unsupported as why_not

        why = why_not(y, w3, w3, x)
        if why is None and ids is not None and ids.dtype not in ID_DTYPES:
            why = f"ids of {ids.dtype}"
        return why

    if use_triton("refiner", tensors, unsupported):
        from .triton_kernel import refine_composite_triton

        return refine_composite_triton(y, x, _packed("refine_composite", params, y.dtype, cache), cond,
                                       base_ch, hist_ch, mask_ch, width, height, out, fmt, out_rgb,
                                       ids=ids, colours=colours)
    return refine_composite_reference(y, x, w3, b3, cond, w1, b1, base_ch, hist_ch, mask_ch, width, height,
                                      out, fmt, out_rgb=out_rgb, ids=ids, colours=colours)
