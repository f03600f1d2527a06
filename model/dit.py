"""The Hybrid Diffusion Transformer: denoises a frame's latent at token resolution.

Per token: the noisy latent and the G-buffers are patch-embedded (stride `latent_patch` over the
latent grid) and summed. Each block has ReLU linear attention over all tokens with running sums
carried from frame to frame (global context, linear cost), cross-attention to the prompt's tokens,
and a depthwise-conv gated FFN (SANA's Mix-FFN: local detail). Modulation is adaLN-single
(PixArt): one projection of a per-token conditioning vector c, shared by every block, plus a
learned per-block table. c sums the per-token noise-level embedding, the G-buffer embedding and the
pooled prompt, so `norm(x) * (1 + scale(c)) + shift(c)` is both the timestep modulation and the
feature-wise G-buffer modulation (as in Enhancing Photorealism Enhancement).

State goes in and comes out: `forward` takes the linear-attention sums of every layer and returns
the updated ones. Nothing is kept in the module between calls.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kernels.adaln import residual_norm
from ..kernels.cross_attention import cross_attention
from ..kernels.linear_attention import linear_attention, linear_attention_causal
from ..kernels.mixffn import dwconv_gate
from .config import ModelConfig
from .layout import SEMANTIC_CHANNELS


def cond_channel_count(config: ModelConfig) -> int:
    return sum(SEMANTIC_CHANNELS[n] for n in config.cond_channels)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of noise levels t in [0, 1]. t [...]; returns [..., dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0).unsqueeze(-1) * freqs
    return torch.cat((torch.cos(args), torch.sin(args)), dim=-1)


class LinearAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads, self.head_dim, self.eps = config.heads, config.head_dim, config.attn_eps
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=False)
        self.proj = nn.Linear(config.width, config.width)
        logit = math.log(config.state_decay / (1 - config.state_decay))
        self.decay_logit = nn.Parameter(torch.full((config.heads,), logit))

    def forward(self, x: torch.Tensor, kv: torch.Tensor, ks: torch.Tensor,
                frames: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [N, T, D] with N = B (one frame each) or N = B * frames (a causal sequence);
        kv [B, H, d, d], ks [B, H, d]. Returns y [N, T, D] and the new kv, ks."""
        n, t, d = x.shape
        qkv = self.qkv(x).view(n, t, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [N, H, T, hd]
        decay = torch.sigmoid(self.decay_logit)
        if frames is None:
            o, kv, ks = linear_attention(q, k, v, kv, ks, decay, self.eps)
        else:
            seq = lambda z: z.reshape(n // frames, frames, *z.shape[1:])  # noqa: E731
            o, kv, ks = linear_attention_causal(seq(q), seq(k), seq(v), kv, ks, decay, self.eps)
            o = o.reshape(n, *o.shape[2:])
        return self.proj(o.transpose(1, 2).reshape(n, t, d)), kv, ks


class CrossAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads, self.head_dim = config.heads, config.head_dim
        self.q = nn.Linear(config.width, config.width)
        self.kv = nn.Linear(config.text_dim, 2 * config.width)
        self.proj = nn.Linear(config.width, config.width)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x [N, T, D]; ctx [N, L, Dt] prompt tokens; bias [N, L] additive logit bias (log blend
        weight for real tokens, -inf for padding). Returns [N, T, D]."""
        n, t, d = x.shape
        q = self.q(x).view(n, t, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(ctx).view(n, ctx.shape[1], 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        o = cross_attention(q, k, v, bias)
        return self.proj(o.transpose(1, 2).reshape(n, t, d))


class MixFFN(nn.Module):
    """1x1 expand -> 3x3 depthwise conv on the token grid -> gated (SiLU) -> 1x1 project."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        h = config.hidden
        self.expand = nn.Linear(config.width, 2 * h)
        self.dw = nn.Conv2d(2 * h, 2 * h, 3, padding=1, groups=2 * h)
        self.project = nn.Linear(h, config.width)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """x [N, T, D] with T = grid[0] * grid[1], row-major. Returns [N, T, D]."""
        return self.project(dwconv_gate(self.expand(x), grid, self.dw.weight, self.dw.bias))


class HybridBlock(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.width
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = LinearAttention(config)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.cross = CrossAttention(config)
        self.norm3 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ffn = MixFFN(config)
        self.table = nn.Parameter(torch.randn(6, d) / math.sqrt(d))  # adaLN-single per-block offsets

    def entry_norm(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        """The block's first norm (adaLN rows shift1, scale1 with this block's table): what
        `forward` takes as y. Only the first block runs it alone; each block's `forward` ends with
        the next one's, in the same pass as its last residual."""
        return residual_norm(x, mod=mod, norm_table=self.table, shift=0, scale=1, eps=self.norm1.eps)[1]

    def forward(self, x, y, mod, grid, ctx, bias, kv, ks, frames, next_table: torch.Tensor | None = None,
                next_eps: float = 1e-6):
        """x [N, T, D] the residual stream and y its `entry_norm`; mod [N, T, 6, D]: rows shift1,
        scale1, gate1, shift2, scale2, gate2 (plus this block's table). Returns x, the following
        block's y (its `entry_norm` of the new x, from its `table` and norm1's eps given as
        `next_table`, `next_eps`: tensors and a number, not the block, so that the blocks share one
        compiled graph; None without `next_table`) and this layer's new state. The residuals, norms and modulation run through `kernels.adaln.residual_norm` (one
        pass each on a GPU; the last residual and the following block's first norm share one)."""
        tab = self.table
        a, kv, ks = self.attn(y, kv, ks, frames)
        x, y = residual_norm(x, a, mod, tab, gate=2, norm="affine", weight=self.norm2.weight,
                             bias=self.norm2.bias, eps=self.norm2.eps)
        x, y = residual_norm(x, self.cross(y, ctx, bias), mod=mod, norm_table=tab, shift=3, scale=4,
                             eps=self.norm3.eps)
        if next_table is None:
            x, _ = residual_norm(x, self.ffn(y, grid), mod, tab, gate=5, norm=None)
            return x, None, kv, ks
        x, y = residual_norm(x, self.ffn(y, grid), mod, tab, gate=5, norm_table=next_table, shift=0,
                             scale=1, eps=next_eps)
        return x, y, kv, ks


class HybridDiT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        d, lp = config.width, config.latent_patch
        self.x_embed = nn.Conv2d(config.latent_channels, d, lp, stride=lp)
        self.g_embed = nn.Conv2d(cond_channel_count(config), d, lp, stride=lp)
        self.t_freq = 256
        self.t_mlp = nn.Sequential(nn.Linear(self.t_freq, d), nn.SiLU(), nn.Linear(d, d))
        self.text_pool = nn.Linear(config.text_dim, d)
        self.mod = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.blocks = nn.ModuleList(HybridBlock(config) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_mod = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.final = nn.Linear(d, lp * lp * config.latent_channels)

    def embed_gbuffers(self, cond: torch.Tensor) -> torch.Tensor:
        """cond [N, Cg, h, w] at latent resolution -> [N, T, D]. Once per frame, not per step."""
        return self.g_embed(cond).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor, g: torch.Tensor, ctx: torch.Tensor,
                bias: torch.Tensor, pooled: torch.Tensor, kv: torch.Tensor, ks: torch.Tensor,
                frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict the flow velocity (noise - clean) of the latent.

        x [N, C, h, w] noisy latent; t [N, T] per-token noise level in [0, 1]; g [N, T, D] from
        `embed_gbuffers`; ctx [N, L, Dt], bias [N, L], pooled [N, Dt] the prompt; kv [depth, B, H, d, d]
        and ks [depth, B, H, d] the running sums. With `frames` None, N = B and each row is one frame;
        with `frames` = F, N = B * F rows are F consecutive frames of each of B sequences (the causal
        form, for training and as the spec of streaming). Returns v [N, C, h, w] and the new sums.
        """
        cfg = self.config
        lp = cfg.latent_patch
        n, _, h, w = x.shape
        grid = (h // lp, w // lp)
        tok = self.x_embed(x).flatten(2).transpose(1, 2) + g  # [N, T, D]
        c = self.t_mlp(timestep_embedding(t, self.t_freq).to(tok.dtype)) + g + self.text_pool(pooled).unsqueeze(1)
        mod = self.mod(c).view(n, -1, 6, cfg.width)  # [N, T, 6, D]
        new_kv, new_ks = [], []
        blocks = list(self.blocks)
        y = blocks[0].entry_norm(tok, mod)
        for i, block in enumerate(blocks):
            nxt = blocks[i + 1] if i + 1 < len(blocks) else None
            tok, y, kv_i, ks_i = block(tok, y, mod, grid, ctx, bias, kv[i], ks[i], frames,
                                       None if nxt is None else nxt.table, 1e-6 if nxt is None else nxt.norm1.eps)
            new_kv.append(kv_i)
            new_ks.append(ks_i)
        final_mod = self.final_mod(c).view(n, -1, 2, cfg.width)  # rows shift, scale
        _, y = residual_norm(tok, mod=final_mod, shift=0, scale=1, eps=self.final_norm.eps)
        out = self.final(y)  # [N, T, lp*lp*C]
        out = out.transpose(1, 2).reshape(n, cfg.latent_channels * lp * lp, *grid)
        v = F.pixel_shuffle(out, lp) if lp > 1 else out  # [N, C, h, w]
        return v, torch.stack(new_kv), torch.stack(new_ks)
