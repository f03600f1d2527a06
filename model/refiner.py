"""The full-resolution refiner: the DiT's quarter-resolution latent, the full-resolution G-buffers
and the session's full-resolution history in, the frame out.

A quarter-resolution latent caps sharpness (the oracle itself, taken down to 1/4 and back, scores
24.6 dB on cel shading), so the frame is finished at full resolution by a small guided network, as
TAA and DLSS finish theirs with a history buffer:

- **Inputs per pixel** (`features`, channels-last [B, H, W, Cin], built by `kernels/refiner_features`
  in one fused pass on a GPU, its order `feature_channels`): the latent upsampled bilinearly
  (3), the normalised G-buffer guide (colour, depth, normals, albedo: 10), the history (the previous
  output warped by the engine's motion vectors, 3) and its mask (1: 0 where the depth test says the
  pixel was disoccluded, on a cut and on the first frame), the position inside the latent pixel
  (2: pixel-art blocks and ink lines sit at sub-latent phases), the screen position (2: vignettes),
  an embedding of the object id (`id_features`: per-object looks such as thermal's heat), and
  Fourier features of the object-space surface position (2 x `surface_features`: strokes, grain and
  grids attached to surfaces). A layout without ids or a surface channel gets zeros there (training
  drops them at random so the model works either way).
- **Per-style object colours** (`id_colours` K > 0): where ids are given, the fresh colour gets
  an RGB offset per object and style, `colour_table(pooled)[id]`: a second id table [256, K]
  times a K x 3 matrix made from the prompt embedding by a Linear that starts at zero (so a model
  grown from one without them starts as that model's function). Thermal's heat and neon's hue are
  per-object colours that the convolutions, conditioned on the style only through biases, learn
  slowly (benchmarks/NOTES.md v0.18); the table gives each object its colour per style in one
  look-up, in the second pass. (Added to the latent instead, the colour is undone by the passes,
  which have learned to correct thermal's and neon's latents: v0.19.)
- **Two fused passes** (`kernels/refiner`): a 3x3 conv with a per-frame style bias (from the pooled
  prompt embedding), SiLU, a 1x1 layer; then a 3x3 conv with its own style bias, SiLU, and a 1x1 to
  four outputs: an RGB correction of the upsampled latent (plus the object's colour) and a
  history-confidence logit. With
  `refiner_depth` > 0, that many residual passes sit between them (y + 1x1(SiLU(3x3(y) + style))),
  each the first pass's kernel; their last layer starts at zero, so a deeper refiner starts as the
  function of the shallower one it is initialised from (`train --init` leaves them fresh). The frame
  is `fresh + sigmoid(logit) * mask * (history - fresh)`: history is kept where it is valid and
  trusted, never where it is disoccluded.

The output (the padded frame, float32) is the next frame's history: it goes into the session's
paged state with its depth (`TemporalState.image`, `image_depth`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..kernels.refiner import conv3x3_mlp, refine_composite
from ..kernels.refiner_features import ID_BUCKETS, feature_channels, refiner_features
from .config import ModelConfig
from .layout import SEMANTIC_CHANNELS


class Refiner(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.stride = config.latent_stride
        guide = sum(SEMANTIC_CHANNELS[n] for n in config.guide_channels)
        e, f, c = config.id_features, config.surface_features, config.refiner_width
        self.channels = feature_channels(guide, e, f)  # where each input sits in x
        self.base_ch, self.guide_ch = self.channels.base, self.channels.guide
        self.hist_ch, self.mask_ch = self.channels.hist, self.channels.mask
        self.in_channels = self.channels.total
        self.ids = nn.Embedding(ID_BUCKETS, e) if e else None
        k = config.id_colours
        self.id_colours = nn.Embedding(ID_BUCKETS, k) if k else None
        self.style_colours = nn.Linear(config.text_dim, k * 3) if k else None
        self.surface = nn.Linear(3, f) if f else None  # cycles per world unit along learned directions
        self.conv1 = nn.Conv2d(self.in_channels, c, 3, padding=1)
        self.mix1 = nn.Linear(c, c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.out = nn.Linear(c, 4)
        self.style1 = nn.Linear(config.text_dim, c)
        self.style2 = nn.Linear(config.text_dim, c)
        self.middle = nn.ModuleList(ResidualPass(c, config.text_dim) for _ in range(config.refiner_depth))
        self._kernel_cache: dict = {}  # the fused kernels' packed weights (kernels/refiner)
        with torch.no_grad():
            if self.surface is not None:
                self.surface.weight.normal_(0.0, 3.0)
                self.surface.bias.uniform_(0.0, 1.0)
            if self.ids is not None:
                self.ids.weight.normal_(0.0, 0.5)
            if self.style_colours is not None:
                self.id_colours.weight.normal_(0.0, 1.0)
                self.style_colours.weight.zero_()
                self.style_colours.bias.zero_()
            for m in (self.style1, self.style2):
                m.weight.zero_()
                m.bias.zero_()
            # Start as the bilinear upsample of the latent with a little history: training grows
            # the correction and the confidence from there.
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()
            self.out.bias[3] = -2.0

    def shift_history_confidence(self, shift: float) -> None:
        """Add `shift` to the history-confidence logit's bias (the fourth output), so that every
        pixel whose history is valid keeps more of it: sigmoid(logit + shift). Pixels without
        history (mask 0) do not change. A calibration of trained weights, measured on the train
        split (`streamstyle export --history-shift`; docs/model-card.md): training starts the blend
        near 0.12 and short runs leave it there, where TAA keeps about half of its history."""
        if not isinstance(shift, (int, float)) or isinstance(shift, bool) or not math.isfinite(shift):
            raise ValueError(f"the history-confidence shift must be a finite number, got {shift!r}")
        with torch.no_grad():
            self.out.bias[3] += float(shift)  # (the kernels' packed copy is keyed by the weight's version)

    def colour_table(self, pooled: torch.Tensor, batch: int) -> torch.Tensor | None:
        """The per-style object colours [batch, 256, 3] (RGB offsets, float32) for `pooled`
        [B or 1, text_dim], or None without `id_colours`: id_colours [256, K] @ M, M [K, 3] the
        style Linear's output."""
        if self.style_colours is None:
            return None
        m = self.style_colours(pooled.to(self.style_colours.weight.dtype)).float()
        m = m.view(m.shape[0], -1, 3)  # [B or 1, K, 3]
        table = torch.matmul(self.id_colours.weight.float(), m)  # [B or 1, 256, 3]
        return table.expand(batch, -1, -1)

    def features(self, latent: torch.Tensor, guide: torch.Tensor, history: torch.Tensor, mask: torch.Tensor,
                 ids: torch.Tensor | None, surface: torch.Tensor | None, width: int, height: int) -> torch.Tensor:
        """latent [B, 3, h, w] in [-1, 1]; guide [B, Cg, H, W] normalised (any float dtype); history
        [B, 3, H, W] in [0, 1]; mask [B, 1, H, W] in {0, 1}; ids [B, H, W] integer or None; surface
        [B, H, W, 3] or None; width x height the frame's real size (H x W may be padded past it).
        Returns the per-pixel inputs [B, H, W, Cin] channels-last, in the refiner's dtype (its
        weights'), assembled by `kernels.refiner_features` (one fused pass on a GPU at inference)."""
        return refiner_features(latent, guide, history, mask, ids, surface,
                                self.ids.weight if self.ids is not None else None,
                                self.surface.weight if self.surface is not None else None,
                                self.surface.bias if self.surface is not None else None,
                                self.stride, width, height, self.conv1.weight.dtype)

    def forward(self, latent: torch.Tensor, guide: torch.Tensor, history: torch.Tensor, mask: torch.Tensor,
                ids: torch.Tensor | None, surface: torch.Tensor | None, pooled: torch.Tensor, width: int,
                height: int, out: tuple[torch.Tensor, str] | None = None) -> torch.Tensor:
        """The frame RGB [B, 3, H, W] float32 in [0, 1] at the (padded) guide size; `pooled`
        [B or 1, text_dim] the prompt's sentence embedding (the style's bias in both passes).
        With `out` = (slot bytes, "rgba8" | "rgba16f") the top-left width x height pixels are also
        written into an engine output slot (B = 1), in the second pass itself on a GPU."""
        x = self.features(latent, guide, history, mask, ids, surface, width, height)
        colours = self.colour_table(pooled, x.shape[0]) if ids is not None else None
        dt = x.dtype
        pooled = pooled.to(self.style1.weight.dtype)
        c1 = self.style1(pooled).to(dt).expand(x.shape[0], -1)
        c2 = self.style2(pooled).to(dt).expand(x.shape[0], -1)
        y = conv3x3_mlp(x, self.conv1.weight, self.conv1.bias, c1, self.mix1.weight, self.mix1.bias, True,
                        cache=self._kernel_cache)
        for layer in self.middle:
            y = layer(y, pooled)
        slot, fmt = out if out is not None else (None, None)
        return refine_composite(y, x, self.conv2.weight, self.conv2.bias, c2, self.out.weight, self.out.bias,
                                self.base_ch, self.hist_ch, self.mask_ch, width, height, slot, fmt,
                                ids=ids if colours is not None else None, colours=colours,
                                cache=self._kernel_cache)


class ResidualPass(nn.Module):
    """One of the refiner's middle passes: y + 1x1(SiLU(3x3(y) + b + style(pooled))), channels-last
    [B, H, W, C] in and out, the first pass's fused kernel (`conv3x3_mlp` without the output SiLU).
    The 1x1 starts at zero: the pass starts as the identity."""

    def __init__(self, width: int, text_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.mix = nn.Linear(width, width)
        self.style = nn.Linear(text_dim, width)
        self._kernel_cache: dict = {}
        with torch.no_grad():
            for t in (self.mix.weight, self.mix.bias, self.style.weight, self.style.bias):
                t.zero_()

    def forward(self, y: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        cond = self.style(pooled.to(self.style.weight.dtype)).to(y.dtype).expand(y.shape[0], -1)
        return y + conv3x3_mlp(y, self.conv.weight, self.conv.bias, cond, self.mix.weight, self.mix.bias, False,
                               cache=self._kernel_cache)
