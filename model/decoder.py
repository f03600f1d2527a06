"""The guided decoder: latent (1/latent_stride resolution) to full-resolution RGB.

No image autoencoder (DESIGN.md: DC-AE alone would take 78 ms at 1080p). The latent is upsampled
bilinearly and a small per-pixel network, fed the full-resolution G-buffers, adds the detail the
low-resolution latent cannot hold: edges, normals-driven shading, texture from albedo and color.
One 3x3 conv then two 1x1 convs (`kernels/decoder`): the reference reads and writes each
full-resolution pixel a handful of times; the Triton kernel does it in one pass.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..kernels.decoder import guided_decode, guided_decode_rgba
from .config import ModelConfig
from .layout import SEMANTIC_CHANNELS


class GuidedDecoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.stride = config.latent_stride
        c_in = config.latent_channels + sum(SEMANTIC_CHANNELS[n] for n in config.guide_channels)
        c = config.decoder_width
        self.conv = nn.Conv2d(c_in, c, 3, padding=1)
        self.mix = nn.Conv2d(c, c, 1)
        self.out = nn.Conv2d(c, 3, 1)
        self._kernel_cache: dict = {}  # the fused kernel's packed weights (kernels/decoder)

    def forward(self, latent: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """latent [N, C, h, w] in [-1, 1]; guide [N, Cg, H, W] normalised G-buffers with
        H = h * stride. Returns RGB [N, 3, H, W] in [0, 1] (display-referred)."""
        return guided_decode(latent, guide, self.conv.weight, self.conv.bias, self.mix.weight, self.mix.bias,
                             self.out.weight, self.out.bias, self.stride, cache=self._kernel_cache)

    def forward_rgba(self, latent: torch.Tensor, guide: torch.Tensor, out: torch.Tensor, fmt: str, width: int,
                     height: int) -> None:
        """Decode one frame straight into an engine output slot: `out` (uint8 bytes) receives the
        top-left `width` x `height` pixels as RGBA8 or RGBA16F (on a GPU, inside the decoder's one
        pass)."""
        guided_decode_rgba(latent, guide, self.conv.weight, self.conv.bias, self.mix.weight, self.mix.bias,
                           self.out.weight, self.out.bias, self.stride, out, fmt, width, height,
                           cache=self._kernel_cache)
