"""Triton kernel for `reference.cross_attention` with a short context.

The whole context (L <= 256 tokens) fits one tile, so there is no online softmax: per (batch x
head, block of BLOCK_T tokens) one program loads the context's keys and values once, forms the
[BLOCK_T, L] logits on the tensor cores, adds the bias, normalises and multiplies by the values.
The output is written through strides, so the caller can ask for token-major memory ([N, T, H, d])
and project it without a copy. Written for Triton 3.6 (the GPU machine) and 3.9 (the CPU
interpreter in CI). Head dim: a power of two >= 16.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

BLOCK_T, NUM_WARPS = 64, 4  # tokens per program and its warps (benchmarks/NOTES.md: the sweep)
MAX_CONTEXT = 256


@triton.jit
def _cross_attention(q_ptr, k_ptr, v_ptr, b_ptr, o_ptr, T, L, H, scale,
                     sq_n, sq_h, sq_t, sk_n, sk_h, sk_l, sv_n, sv_h, sv_l, sb_n, so_n, so_h, so_t,
                     D: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK: tl.constexpr):
    nh = tl.program_id(0)
    n = nh // H
    h = nh % H
    t = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    tm = t < T
    dd = tl.arange(0, D)
    ll = tl.arange(0, BLOCK_L)
    lm = ll < L
    q = tl.load(q_ptr + n.to(tl.int64) * sq_n + h * sq_h + t.to(tl.int64)[:, None] * sq_t + dd[None, :],
                mask=tm[:, None], other=0.0)
    k = tl.load(k_ptr + n.to(tl.int64) * sk_n + h * sk_h + ll[:, None] * sk_l + dd[None, :], mask=lm[:, None], other=0.0)
    v = tl.load(v_ptr + n.to(tl.int64) * sv_n + h * sv_h + ll[:, None] * sv_l + dd[None, :], mask=lm[:, None], other=0.0)
    bias = tl.load(b_ptr + n.to(tl.int64) * sb_n + ll, mask=lm, other=float("-inf")).to(tl.float32)
    s = tl.dot(q, tl.trans(k)).to(tl.float32) * scale + bias[None, :]  # [BLOCK, BLOCK_L]
    p = tl.exp(s - tl.max(s, axis=1)[:, None])
    o = tl.dot(p.to(v.dtype), v).to(tl.float32) / tl.sum(p, axis=1)[:, None]
    tl.store(o_ptr + n.to(tl.int64) * so_n + h * so_h + t.to(tl.int64)[:, None] * so_t + dd[None, :],
             o.to(o_ptr.dtype.element_ty), mask=tm[:, None])


def unsupported(q: torch.Tensor, k: torch.Tensor) -> str | None:
    d = q.shape[-1]
    if d < 16 or d & (d - 1):
        return f"head dim {d} is not a power of two >= 16"
    if k.shape[2] > MAX_CONTEXT:
        return f"a context of {k.shape[2]} tokens is over {MAX_CONTEXT}"
    if q.stride(-1) != 1 or k.stride(-1) != 1:
        return "the head dim is not contiguous"
    return None


def cross_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                           out: torch.Tensor | None = None) -> torch.Tensor:
    """Same contract as `reference.cross_attention`. `out` may give a preallocated [N, H, T, d]
    tensor (any strides with a contiguous head dim); by default it has token-major memory."""
    n, h, t, d = q.shape
    length = k.shape[2]
    why = unsupported(q, k)
    if why or v.stride(-1) != 1:
        raise ValueError(why or "the head dim of v is not contiguous")
    bias = bias.float().contiguous()
    if out is None:
        out = torch.empty((n, t, h, d), device=q.device, dtype=q.dtype).transpose(1, 2)
    block_l = max(16, triton.next_power_of_2(length))
    _cross_attention[(n * h, triton.cdiv(t, BLOCK_T))](
        q, k, v, bias, out, t, length, h, 1.0 / math.sqrt(d),
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), bias.stride(0), out.stride(0), out.stride(1), out.stride(2),
        D=d, BLOCK_L=block_l, BLOCK=BLOCK_T, num_warps=NUM_WARPS)
    return out
