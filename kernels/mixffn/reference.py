"""Reference for the Mix-FFN's middle: 3x3 depthwise conv on the token grid, then the SiLU gate.

SANA's Mix-FFN expands each token to 2h channels, runs a 3x3 depthwise conv over the token grid
(local detail), and gates: silu(first half) * second half. Tokens are rows of [N, T, 2h] (channels
last, as the linear layers make them); the conv wants [N, 2h, th, tw], so eager PyTorch transposes
in, convolves, transposes out and gates: four passes over the widest activation of the block. The
Triton kernel convolves the channels-last rows in place and gates in registers: one read (from
cache, nine taps) and one write of half the width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dwconv_gate(e: torch.Tensor, grid: tuple[int, int], weight: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
    """e [N, T, 2h] with T = grid[0] * grid[1] row-major; weight [2h, 1, 3, 3]; bias [2h] or None.
    Returns silu(a) * b [N, T, h] where (a, b) are the halves of the conv's output channels."""
    n, t, c2 = e.shape
    y = F.conv2d(e.transpose(1, 2).reshape(n, c2, *grid), weight, bias, padding=1, groups=c2)
    a, b = y.flatten(2).transpose(1, 2).chunk(2, dim=-1)
    return F.silu(a) * b
