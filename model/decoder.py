"""The guided decoder: latent (1/latent_stride resolution) to full-resolution RGB.

No image autoencoder (DESIGN.md: DC-AE alone would take 78 ms at 1080p). The latent is upsampled
bilinearly and a small per-pixel network, fed the full-resolution G-buffers, adds the detail the
low-resolution latent cannot hold: edges, normals-driven shading, texture from albedo and color.
One 3x3 conv then two 1x1 convs: each full-resolution pixel is read and written a handful of times,
which a fused kernel can bring down to once.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

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

    def forward(self, latent: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """latent [N, C, h, w] in [-1, 1]; guide [N, Cg, H, W] normalised G-buffers with
        H = h * stride. Returns RGB [N, 3, H, W] in [0, 1] (display-referred)."""
        up = F.interpolate(latent, scale_factor=self.stride, mode="bilinear", align_corners=False)
        f = F.silu(self.conv(torch.cat((up, guide.to(up.dtype)), dim=1)))
        f = F.silu(self.mix(f))
        rgb = up[:, :3] + self.out(f)
        return (rgb * 0.5 + 0.5).clamp(0.0, 1.0)
