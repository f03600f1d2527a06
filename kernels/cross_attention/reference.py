"""Reference for cross-attention from the frame's tokens to the prompt's tokens.

Every token attends to the same short context (at most `max_prompts x max_prompt_tokens` = 128
prompt tokens), with an additive logit bias per context token: log(blend weight) on real tokens,
-inf on padding. Softmax scale 1/sqrt(head dim).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """q [N, H, T, d]; k, v [N, H, L, d]; bias [N, L] (at least one finite entry per row).
    Returns o [N, H, T, d] in q's dtype."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, None, None, :].to(q.dtype))
