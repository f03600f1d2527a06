"""Reference guided decode: the decoder's full-resolution passes as plain PyTorch ops.

up = bilinear upsample of the latent by `stride` (align_corners=False); f = silu(conv3x3([up, guide]));
f = silu(conv1x1(f)); rgb = clamp((up[:3] + conv1x1(f)) * 0.5 + 0.5, 0, 1). Each pass reads and
writes every full-resolution pixel; the Triton kernel does all of it in one pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def guided_decode(latent: torch.Tensor, guide: torch.Tensor, conv_w: torch.Tensor, conv_b: torch.Tensor,
                  mix_w: torch.Tensor, mix_b: torch.Tensor, out_w: torch.Tensor, out_b: torch.Tensor,
                  stride: int) -> torch.Tensor:
    """latent [N, Cl, h, w]; guide [N, Cg, h*stride, w*stride]; conv weights as nn.Conv2d holds them.
    Returns RGB [N, 3, H, W] in [0, 1], in the latent's dtype."""
    up = F.interpolate(latent, scale_factor=stride, mode="bilinear", align_corners=False)
    f = F.silu(F.conv2d(torch.cat((up, guide.to(up.dtype)), dim=1), conv_w, conv_b, padding=1))
    f = F.silu(F.conv2d(f, mix_w, mix_b))
    rgb = up[:, :3] + F.conv2d(f, out_w, out_b)
    return (rgb * 0.5 + 0.5).clamp(0.0, 1.0)


def check_slot_frame(latent: torch.Tensor, guide: torch.Tensor, width: int, height: int) -> None:
    """A decode written into an output slot is one frame whose top-left `width` x `height` pixels
    the slot takes. Raises ValueError otherwise."""
    if latent.shape[0] != 1:
        raise ValueError(f"an output slot holds one frame; got a batch of {latent.shape[0]}")
    if not (0 < width <= guide.shape[3] and 0 < height <= guide.shape[2]):
        raise ValueError(f"a {width}x{height} frame does not fit the decoded {guide.shape[3]}x{guide.shape[2]}")
