"""Reference for row-wise FP8 (e4m3) quantization of activations and weights.

Each row is scaled so that its largest magnitude lands on e4m3's largest finite value (448):
x ~= q * scale, one float32 scale per row. The FP8 product (`torch._scaled_mm`) takes these row
scales for A and column scales for B.
"""

from __future__ import annotations

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite e4m3fn value


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (q [M, K] float8 e4m3, scale [M, 1] float32) with x ~= q * scale."""
    amax = x.detach().abs().amax(dim=1, keepdim=True).float().clamp_min(1e-12)
    scale = amax / FP8_MAX
    q = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale
