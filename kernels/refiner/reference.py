"""The refiner's two full-resolution passes in plain PyTorch: the spec of the fused kernels, and
what training runs (it is differentiable). Channels-last: x [B, H, W, Cin].

`conv3x3_mlp`:  y = act(SiLU(conv3x3(x; w3, b3) + cond[b]) @ w1^T + b1)   (act: SiLU or none)
`refine_composite`: z = SiLU(conv3x3(y; w3, b3) + cond[b]); o = z @ w1^T + b1 (4 outputs);
    fresh = base + o[..., :3], alpha = sigmoid(o[..., 3]) * mask,
    rgb = clamp(fresh + alpha * (hist - fresh), 0, 1),
with base = (x[..., base_ch:+3] + 1) / 2, hist = (x[..., hist_ch:+3] + 1) / 2, mask = x[..., mask_ch].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _conv(x: torch.Tensor, w3: torch.Tensor, b3: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    h = F.conv2d(x.permute(0, 3, 1, 2), w3.to(x.dtype), b3.to(x.dtype), padding=1)  # [B, C1, H, W]
    if cond is not None:
        h = h + cond.to(h.dtype)[:, :, None, None]
    return F.silu(h)


def conv3x3_mlp(x: torch.Tensor, w3: torch.Tensor, b3: torch.Tensor, cond: torch.Tensor | None,
                w1: torch.Tensor, b1: torch.Tensor, act_out: bool = True) -> torch.Tensor:
    h = _conv(x, w3, b3, cond)
    y = F.conv2d(h, w1.to(h.dtype)[:, :, None, None], b1.to(h.dtype))
    if act_out:
        y = F.silu(y)
    return y.permute(0, 2, 3, 1)


def refine_composite(y: torch.Tensor, x: torch.Tensor, w3: torch.Tensor, b3: torch.Tensor,
                     cond: torch.Tensor | None, w1: torch.Tensor, b1: torch.Tensor, base_ch: int, hist_ch: int,
                     mask_ch: int) -> torch.Tensor:
    """Returns rgb [B, 3, H, W] float32 in [0, 1]."""
    z = _conv(y, w3, b3, cond)
    o = F.conv2d(z, w1.to(z.dtype)[:, :, None, None], b1.to(z.dtype)).float()  # [B, 4, H, W]
    xc = x.permute(0, 3, 1, 2).float()
    base = (xc[:, base_ch:base_ch + 3] + 1) * 0.5
    hist = (xc[:, hist_ch:hist_ch + 3] + 1) * 0.5
    mask = xc[:, mask_ch:mask_ch + 1]
    fresh = base + o[:, :3]
    alpha = torch.sigmoid(o[:, 3:4]) * mask
    return (fresh + alpha * (hist - fresh)).clamp(0.0, 1.0)
