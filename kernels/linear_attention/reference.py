"""Reference ReLU linear attention whose running sums carry over from frame to frame.

Within a frame attention is global over all T tokens; across frames it is causal with a per-head
decay g in (0, 1). With phi = relu and S_f = sum_n phi(k_n) v_n^T, z_f = sum_n phi(k_n) over frame f:

    KV_f = g * KV_{f-1} + S_f        K_f = g * K_{f-1} + z_f
    o_n  = phi(q_n) KV_f / (phi(q_n) . K_f + eps)

The state (KV, K) has constant size [B, H, d, d] + [B, H, d] however many frames run. Math is
at least float32 whatever the input dtype (float64 stays float64); outputs take q's dtype, states
keep the compute dtype.
`linear_attention` runs one frame; `linear_attention_causal` runs a whole sequence at once through
an explicit decay-weighted sum, and is the spec the streaming form must equal.
"""

from __future__ import annotations

import torch


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_state: torch.Tensor,
                     k_state: torch.Tensor, decay: torch.Tensor,
                     eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One frame. q, k, v [B, H, T, d]; kv_state [B, H, d, d]; k_state [B, H, d]; decay [H].
    Returns o [B, H, T, d], new kv_state, new k_state."""
    ct = torch.promote_types(q.dtype, torch.float32)
    qf, kf = torch.relu(q.to(ct)), torch.relu(k.to(ct))
    g = decay.to(ct).view(1, -1, 1, 1)
    kv = g * kv_state.to(ct) + torch.einsum("bhtd,bhte->bhde", kf, v.to(ct))
    ks = g[..., 0] * k_state.to(ct) + kf.sum(dim=2)
    num = torch.einsum("bhtd,bhde->bhte", qf, kv)
    den = torch.einsum("bhtd,bhd->bht", qf, ks).unsqueeze(-1) + eps
    return (num / den).to(q.dtype), kv, ks


def linear_attention_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            kv_state: torch.Tensor, k_state: torch.Tensor, decay: torch.Tensor,
                            eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A whole sequence. q, k, v [B, F, H, T, d]; initial states as in `linear_attention`.
    Returns o [B, F, H, T, d] and the states after the last frame."""
    nf = q.shape[1]
    ct = torch.promote_types(q.dtype, torch.float32)
    qf, kf = torch.relu(q.to(ct)), torch.relu(k.to(ct))
    s = torch.einsum("bfhtd,bfhte->bfhde", kf, v.to(ct))  # per-frame sums [B, F, H, d, d]
    z = kf.sum(dim=3)  # [B, F, H, d]
    idx = torch.arange(nf, device=q.device)
    lag = (idx.view(-1, 1) - idx.view(1, -1)).to(ct)  # [F, F]: f - f'
    g = decay.to(ct).view(1, 1, -1)  # [1, 1, H]
    # w[f, f', h] = g_h^(f - f') for f' <= f, else 0
    w = torch.where(lag.unsqueeze(-1) >= 0, g ** lag.clamp_min(0).unsqueeze(-1), torch.zeros((), dtype=ct))
    carry = g.view(1, 1, -1) ** (idx.to(ct) + 1).view(1, -1, 1)  # [1, F, H]: g^(f+1)
    kv = torch.einsum("fgh,bghde->bfhde", w, s) + carry[..., None, None] * kv_state.to(ct).unsqueeze(1)
    ks = torch.einsum("fgh,bghd->bfhd", w, z) + carry[..., None] * k_state.to(ct).unsqueeze(1)
    num = torch.einsum("bfhtd,bfhde->bfhte", qf, kv)
    den = torch.einsum("bfhtd,bfhd->bfht", qf, ks).unsqueeze(-1) + eps
    return (num / den).to(q.dtype), kv[:, -1], ks[:, -1]
