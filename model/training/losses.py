"""Image losses that need no downloaded weights.

- `edge_loss`: L1 between the images' horizontal and vertical differences: ink lines, block edges
  and hatching are where a blurry frame loses most and plain L1 notices least.
- `perceptual_loss`: L1 between the features of a fixed random-weight CNN (three 3x3 conv layers,
  ReLU, strides 1, 2, 2; weights drawn once from a fixed seed and never trained). Random conv
  features respond to local structure and texture statistics much as trained ones do at low
  layers, which is what a frame's sharpness lives in (Ulyanov et al.'s deep image prior line of
  work; random-feature perceptual losses in super-resolution).
- `temporal_loss`: on pixels whose history is valid, the frame's change from its warped previous
  output against the oracle's own change over the same warp, so that flicker beyond what the
  target does costs, but following the target's real change does not (a plain |out - warped prev|
  rewards freezing, which measured 2 dB below: issue 13).
- `grid_loss`: the error's periodic part at the token stride (`token_grid`): the DiT decodes each
  token's patch on its own, and its seams show as a faint grid on flat areas (sky, ground) that
  L1 spreads over the whole frame and barely sees. The eval's `token_grid` is the same pattern,
  in 8-bit levels.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

PERCEPTUAL_SEED = 1234


def token_grid(x: torch.Tensor, patch: int) -> torch.Tensor:
    """x [..., H, W] -> [..., patch, patch]: the mean over every whole token cell (a cell starts at
    a multiple of `patch`, as the model's tokens do) less its own mean. Content that is not locked
    to the token grid averages out over the cells; a pattern the tokens repeat stays."""
    if patch < 1 or x.shape[-2] < patch or x.shape[-1] < patch:
        raise ValueError(f"a token grid of {patch} px needs a frame at least that large, got {tuple(x.shape[-2:])}")
    h, w = x.shape[-2] // patch, x.shape[-1] // patch
    cells = x[..., :h * patch, :w * patch].unflatten(-1, (w, patch)).unflatten(-3, (h, patch))
    mean = cells.mean((-4, -2))
    return mean - mean.mean((-2, -1), keepdim=True)


def grid_loss(x: torch.Tensor, y: torch.Tensor, patch: int) -> torch.Tensor:
    """x, y [B, C, H, W]: the mean absolute token-grid pattern of the error x - y."""
    return token_grid(x - y.to(x.dtype), patch).abs().mean()


def edge_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x, y [B, C, H, W]."""
    dx = (x[..., :, 1:] - x[..., :, :-1]) - (y[..., :, 1:] - y[..., :, :-1])
    dy = (x[..., 1:, :] - x[..., :-1, :]) - (y[..., 1:, :] - y[..., :-1, :])
    return 0.5 * (dx.abs().mean() + dy.abs().mean())


class RandomFeatures(nn.Module):
    """The fixed random CNN of `perceptual_loss`."""

    def __init__(self, seed: int = PERCEPTUAL_SEED):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.layers = nn.ModuleList([nn.Conv2d(3, 16, 3, 1, 1), nn.Conv2d(16, 32, 3, 2, 1), nn.Conv2d(32, 32, 3, 2, 1)])
        with torch.no_grad():
            for conv in self.layers:
                fan_in = conv.in_channels * 9
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                conv.bias.zero_()
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        x = x * 2 - 1
        for conv in self.layers:
            x = F.relu(conv(x))
            feats.append(x)
        return feats


@functools.lru_cache(maxsize=8)
def _features(device: str, dtype: torch.dtype) -> RandomFeatures:
    return RandomFeatures().to(device=device, dtype=dtype)


def perceptual_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x, y [B, 3, H, W] in [0, 1]. The mean over the batch of each image's loss."""
    net = _features(str(x.device), x.dtype)
    total = x.new_zeros(x.shape[0])
    for fx, fy in zip(net(x), net(y.to(x.dtype))):  # each image normalised by its own feature scale
        total = total + (fx - fy).abs().mean((1, 2, 3)) / (fy.abs().mean((1, 2, 3)).detach() + 1e-3)
    return (total / len(net.layers)).mean()


def temporal_loss(out: torch.Tensor, out_prev_warped: torch.Tensor, target: torch.Tensor,
                  target_prev_warped: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """All [B, C, H, W] but mask [B, 1, H, W] in {0, 1} (valid history, and not deliberately
    corrupted). Each image's mean over its masked pixels (0 when it has none), then the mean over
    the batch (so equal shares of a batch average to the whole batch's value)."""
    diff = ((out - out_prev_warped) - (target - target_prev_warped)).abs().mean(1, keepdim=True)
    n = mask.sum((1, 2, 3))
    return ((diff * mask).sum((1, 2, 3)) / n.clamp_min(1.0)).mean()
