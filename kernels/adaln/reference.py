"""Reference for the transformer block's token-wise glue: gated residual, LayerNorm, adaLN modulate.

The Hybrid block (model/dit.py) does, per token row of width D,

    r = x + gate * delta                   (the residual; gate a row of the modulation, or 1)
    y = LayerNorm(r) * weight + bias       (affine norm), or
    y = LayerNorm(r) * (1 + scale) + shift (adaLN: shift and scale rows of the modulation)

where the modulation rows come from `mod` [N, T, S, D] (one projection per token, shared by every
block) plus a per-block `table` [S, D]: row i is `mod[..., i, :] + table[i]`. Eager PyTorch spends a
full pass over the activations on each of those operations (and more on the strided views of
`mod`); the Triton kernel reads x, delta and the rows it needs once and writes r and y once.

`residual_norm` is the op; the arguments pick which parts run. Math in float32 for reduced
precision inputs, outputs in x's dtype (the order of operations of the unfused model, so trained
weights behave the same).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mod_row(mod: torch.Tensor, table: torch.Tensor | None, i: int) -> torch.Tensor:
    """Row i of the modulation: mod [N, T, S, D] (+ table [S, D]) -> [N, T, D]."""
    row = mod[:, :, i]
    return row if table is None else row + table[i]


def residual_norm(x: torch.Tensor, delta: torch.Tensor | None = None, mod: torch.Tensor | None = None,
                  gate_table: torch.Tensor | None = None, gate: int | None = None,
                  norm: str | None = "modulate", norm_table: torch.Tensor | None = None,
                  shift: int | None = None, scale: int | None = None, weight: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x [N, T, D]; delta [N, T, D] or None (no residual: r = x); mod [N, T, S, D] with `gate`,
    `shift`, `scale` indices into S (the gate's rows plus `gate_table`, the norm's plus
    `norm_table`); norm one of None (no y), "affine" (weight, bias [D] or None), "modulate"
    (shift and scale rows). Returns (r, y)."""
    if delta is None:
        r = x
    elif gate is None:
        r = x + delta
    else:
        r = x + mod_row(mod, gate_table, gate) * delta
    if norm is None:
        return r, None
    if norm == "affine":
        return r, F.layer_norm(r, (r.shape[-1],), weight, bias, eps)
    if norm != "modulate":
        raise ValueError(f"norm must be None, 'affine' or 'modulate', not {norm!r}")
    y = F.layer_norm(r, (r.shape[-1],), None, None, eps)
    return r, y * (1 + mod_row(mod, norm_table, scale)) + mod_row(mod, norm_table, shift)
