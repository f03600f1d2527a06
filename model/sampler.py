"""Few-step flow-matching sampler with per-token noise levels, and the warped start.

Convention: x_t = (1 - t) * x_0 + t * noise with t in [0, 1] (t = 1 is pure noise); the network
predicts the velocity v = noise - x_0, and an Euler step from t to t' is x + (t' - t) * v. Every
token has its own starting level: tokens whose history survived the warp start at `strength` from
the warped previous latent, re-noised; frame 0 and disoccluded tokens start at 1 from pure noise.
Each token then walks linearly from its start to 0 in the same number of steps.

The sampler knows nothing of the network: it calls one function, `denoise(x, t) -> (v, aux)`, and
returns the last `aux` (the network's updated temporal sums) with the clean latent.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..interop.limits import MAX_STEPS, MIN_STEPS  # noqa: F401  (the contract's range)

Denoise = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, Any]]


def tokens_to_latent(t: torch.Tensor, grid: tuple[int, int], latent_patch: int) -> torch.Tensor:
    """Per-token values [B, T] -> per-latent-pixel [B, 1, h, w] (each token covers lp x lp)."""
    b = t.shape[0]
    tok = t.view(b, 1, *grid)
    return tok.repeat_interleave(latent_patch, 2).repeat_interleave(latent_patch, 3)


def start_levels(valid: torch.Tensor, has_history: torch.Tensor, strength: float | torch.Tensor,
                 latent_patch: int) -> torch.Tensor:
    """Per-token starting noise level. valid [B, 1, h, w] bool (history trusted at that latent
    pixel), has_history [B] in {0, 1}. A token keeps its history only if every latent pixel in it
    does. strength: a number, or a float32 tensor broadcastable to [B, 1]. Returns t [B, T]
    float32: `strength` where history is kept, 1.0 elsewhere."""
    kept = -F.max_pool2d(-valid.float(), latent_patch)  # min-pool: [B, 1, th, tw]
    kept = kept.flatten(1) * has_history.float().view(-1, 1)  # [B, T]
    # A Python number stays one (a device tensor made from it would be a host-to-device copy,
    # which waits on the stream); a tensor (a graph's buffer, a batch's [B, 1]) broadcasts.
    return kept * strength + (1.0 - kept)


def initial_latent(warped: torch.Tensor, t0: torch.Tensor, noise: torch.Tensor, grid: tuple[int, int],
                   latent_patch: int, history_noise: float = 1.0) -> torch.Tensor:
    """Re-noise the warped previous latent to each token's level. warped, noise [B, C, h, w];
    t0 [B, T]. Tokens below level 1 (they keep their history) take `history_noise` times the
    noise; tokens at 1 (no history) all of it. Returns x [B, C, h, w]."""
    t = tokens_to_latent(t0, grid, latent_patch)
    if history_noise != 1.0:  # (a Python number: the default path is the arithmetic it always was)
        scale = torch.where(t0 < 1.0, history_noise, 1.0)
        noise = noise * tokens_to_latent(scale, grid, latent_patch).to(noise.dtype)
    return (1.0 - t) * warped + t * noise


def flow_sample(denoise: Denoise, x: torch.Tensor, t0: torch.Tensor, steps: int, grid: tuple[int, int],
                latent_patch: int) -> tuple[torch.Tensor, Any]:
    """Integrate from per-token levels t0 [B, T] to 0 in `steps` Euler steps.
    x [B, C, h, w]. Returns the clean latent [B, C, h, w] and the last step's aux."""
    if not (isinstance(steps, int) and MIN_STEPS <= steps <= MAX_STEPS):
        raise ValueError(f"steps must be an integer from 1 to {MAX_STEPS}, got {steps!r}")
    aux = None
    for k in range(steps):
        t = t0 * (1.0 - k / steps)
        t_next = t0 * (1.0 - (k + 1) / steps)
        v, aux = denoise(x, t)
        x = x + tokens_to_latent(t_next - t, grid, latent_patch).to(x.dtype) * v
    return x, aux
