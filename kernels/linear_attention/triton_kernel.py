"""Triton kernels for one frame of ReLU linear attention with decayed state (same math and
signature as `reference.linear_attention`).

Three launches: (1) per (batch*head, chunk of tokens) the partial sums S = sum relu(k)^T v and
z = sum relu(k), in float32; (2) per batch*head, the new state g * state + sum of partials; (3) per
(batch*head, block of tokens) the output relu(q) KV / (relu(q) . K + eps). Partials go through a
small workspace rather than atomics, so results do not depend on scheduling. Written for Triton
3.6 (the GPU machine) and 3.9 (the CPU interpreter in CI). Head dim: a power of two >= 16.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_T = 64
CHUNK_BLOCKS = 8  # token blocks per partial-sum program


@triton.jit
def _partial_sums(k_ptr, v_ptr, ps_ptr, pz_ptr, T, H, NC,
                  sk_b, sk_h, sk_t, sk_d, sv_b, sv_h, sv_t, sv_d,
                  D: tl.constexpr, BLOCK: tl.constexpr, BLOCKS: tl.constexpr):
    bh = tl.program_id(0)
    c = tl.program_id(1)
    b = bh // H
    h = bh % H
    dd = tl.arange(0, D)
    acc = tl.zeros((D, D), dtype=tl.float32)
    accz = tl.zeros((D,), dtype=tl.float32)
    for i in range(BLOCKS):
        t = (c * BLOCKS + i) * BLOCK + tl.arange(0, BLOCK)
        m = (t < T)[:, None]
        kp = k_ptr + b.to(tl.int64) * sk_b + h.to(tl.int64) * sk_h + t[:, None].to(tl.int64) * sk_t + dd[None, :] * sk_d
        vp = v_ptr + b.to(tl.int64) * sv_b + h.to(tl.int64) * sv_h + t[:, None].to(tl.int64) * sv_t + dd[None, :] * sv_d
        kb = tl.maximum(tl.load(kp, mask=m, other=0.0).to(tl.float32), 0.0)  # [BLOCK, D]
        vb = tl.load(vp, mask=m, other=0.0).to(tl.float32)
        acc += tl.dot(tl.trans(kb), vb)
        accz += tl.sum(kb, axis=0)
    base = (bh.to(tl.int64) * NC + c) * D * D
    tl.store(ps_ptr + base + dd[:, None] * D + dd[None, :], acc)
    tl.store(pz_ptr + (bh.to(tl.int64) * NC + c) * D + dd, accz)


@triton.jit
def _combine(ps_ptr, pz_ptr, kv_ptr, ks_ptr, g_ptr, kv_out, ks_out, H, NC, D: tl.constexpr):
    bh = tl.program_id(0)
    h = bh % H
    dd = tl.arange(0, D)
    g = tl.load(g_ptr + h).to(tl.float32)
    off = bh.to(tl.int64) * D * D + dd[:, None] * D + dd[None, :]
    acc = g * tl.load(kv_ptr + off)
    accz = g * tl.load(ks_ptr + bh.to(tl.int64) * D + dd)
    for c in range(NC):
        acc += tl.load(ps_ptr + (bh.to(tl.int64) * NC + c) * D * D + dd[:, None] * D + dd[None, :])
        accz += tl.load(pz_ptr + (bh.to(tl.int64) * NC + c) * D + dd)
    tl.store(kv_out + off, acc)
    tl.store(ks_out + bh.to(tl.int64) * D + dd, accz)


@triton.jit
def _outputs(q_ptr, kv_ptr, ks_ptr, o_ptr, T, H, eps,
             sq_b, sq_h, sq_t, sq_d, so_b, so_h, so_t, so_d,
             D: tl.constexpr, BLOCK: tl.constexpr):
    bh = tl.program_id(0)
    j = tl.program_id(1)
    b = bh // H
    h = bh % H
    dd = tl.arange(0, D)
    t = j * BLOCK + tl.arange(0, BLOCK)
    m = (t < T)[:, None]
    kv = tl.load(kv_ptr + bh.to(tl.int64) * D * D + dd[:, None] * D + dd[None, :])
    ks = tl.load(ks_ptr + bh.to(tl.int64) * D + dd)
    qp = q_ptr + b.to(tl.int64) * sq_b + h.to(tl.int64) * sq_h + t[:, None].to(tl.int64) * sq_t + dd[None, :] * sq_d
    qb = tl.maximum(tl.load(qp, mask=m, other=0.0).to(tl.float32), 0.0)
    num = tl.dot(qb, kv)  # [BLOCK, D]
    den = tl.sum(qb * ks[None, :], axis=1) + eps
    o = num / den[:, None]
    op = o_ptr + b.to(tl.int64) * so_b + h.to(tl.int64) * so_h + t[:, None].to(tl.int64) * so_t + dd[None, :] * so_d
    tl.store(op, o.to(o_ptr.dtype.element_ty), mask=m)


def unsupported(q: torch.Tensor) -> str | None:
    d = q.shape[-1]
    if d < 16 or d & (d - 1):
        return f"head dim {d} is not a power of two >= 16"
    return None


def linear_attention_triton(q, k, v, kv_state, k_state, decay, eps, outputs=None):
    """Same contract as `reference.linear_attention`. `outputs` may give preallocated
    (o, new kv_state, new k_state) buffers (tests poison them with NaN; CUDA graphs reuse them)."""
    b, h, t, d = q.shape
    why = unsupported(q)
    if why:
        raise ValueError(why)
    kv = kv_state.float().contiguous()
    ks = k_state.float().contiguous()
    g = decay.float().contiguous()
    if outputs is None:
        # [B, T, H, d] memory seen as [B, H, T, d]: the caller's transpose back to tokens is free.
        o = torch.empty((b, t, h, d), device=q.device, dtype=q.dtype).transpose(1, 2)
        kv_new = torch.empty_like(kv)
        ks_new = torch.empty_like(ks)
    else:
        o, kv_new, ks_new = outputs
    chunk = BLOCK_T * CHUNK_BLOCKS
    nc = max(1, triton.cdiv(t, chunk))
    ps = torch.empty((b * h, nc, d, d), device=q.device, dtype=torch.float32)
    pz = torch.empty((b * h, nc, d), device=q.device, dtype=torch.float32)
    _partial_sums[(b * h, nc)](k, v, ps, pz, t, h, nc, *k.stride(), *v.stride(), D=d, BLOCK=BLOCK_T, BLOCKS=CHUNK_BLOCKS)
    _combine[(b * h,)](ps, pz, kv, ks, g, kv_new, ks_new, h, nc, D=d)
    _outputs[(b * h, triton.cdiv(t, BLOCK_T))](q, kv_new, ks_new, o, t, h, eps, *q.stride(), *o.stride(),
                                               D=d, BLOCK=BLOCK_T)
    return o, kv_new, ks_new
