"""The guided decoder's full-resolution passes. `reference.py` is the spec; `triton_kernel.py`
the fused fast path (one pass per pixel), picked by `kernels.backend`."""

from __future__ import annotations

import torch

from ..backend import use_triton
from .reference import check_slot_frame
from .reference import guided_decode as guided_decode_reference

__all__ = ["guided_decode", "guided_decode_reference", "guided_decode_rgba"]


def _packed(params: tuple[torch.Tensor, ...], cache: dict | None):
    """Padded float32 copies of the weights, made once per weight version and kept in the caller's
    `cache` (the decoder module's own dict, so it dies with the module): a look-up per frame, and no
    allocation inside a CUDA graph capture after the first frame."""
    from .triton_kernel import packed_weights

    key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
    if cache is not None and cache.get("key") == key:
        return cache["weights"]
    weights = packed_weights(*params)
    if cache is not None:
        cache.update(key=key, weights=weights)
    return weights


def guided_decode(latent: torch.Tensor, guide: torch.Tensor, conv_w: torch.Tensor, conv_b: torch.Tensor,
                  mix_w: torch.Tensor, mix_b: torch.Tensor, out_w: torch.Tensor, out_b: torch.Tensor,
                  stride: int, cache: dict | None = None) -> torch.Tensor:
    """See `reference.guided_decode`. The kernel returns float32; the reference the latent's dtype.
    `cache`: a dict owned by the caller (the module) for the kernel's packed weights."""
    params = (conv_w, conv_b, mix_w, mix_b, out_w, out_b)

    def unsupported():
        from .triton_kernel import unsupported as why_not

        return why_not(latent, conv_w)

    if use_triton("decoder", (latent, guide) + params, unsupported):
        from .triton_kernel import guided_decode_triton

        return guided_decode_triton(latent, guide, _packed(params, cache), stride)
    return guided_decode_reference(latent, guide, *params, stride)


def guided_decode_rgba(latent: torch.Tensor, guide: torch.Tensor, conv_w: torch.Tensor, conv_b: torch.Tensor,
                       mix_w: torch.Tensor, mix_b: torch.Tensor, out_w: torch.Tensor, out_b: torch.Tensor,
                       stride: int, out: torch.Tensor, fmt: str, width: int, height: int,
                       cache: dict | None = None) -> None:
    """The decode written into an engine output slot: `out` (uint8 bytes) receives the top-left
    `width` x `height` pixels of the one decoded frame as interleaved RGBA8 or RGBA16F. On a GPU the
    write-back is part of the decoder's single pass; the reference decodes, then writes
    (`kernels.writeback`)."""
    from ..writeback import write_rgba_reference
    from ..writeback.reference import slot_values

    params = (conv_w, conv_b, mix_w, mix_b, out_w, out_b)
    check_slot_frame(latent, guide, width, height)
    slot_values(out, width, height, fmt)  # the format and the slot's size, before any work

    def unsupported():
        from .triton_kernel import unsupported as why_not

        return why_not(latent, conv_w)

    if use_triton("decoder", (latent, guide, out) + params, unsupported):
        from .triton_kernel import guided_decode_rgba_triton

        return guided_decode_rgba_triton(latent, guide, _packed(params, cache), stride, out, fmt, width, height)
    rgb = guided_decode_reference(latent, guide, *params, stride)
    write_rgba_reference(rgb[0, :, :height, :width].float(), out, fmt)
