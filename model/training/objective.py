"""The training objective for one batch of clips, frame by frame as the service runs them.

Per frame f of each clip:
- the previous latent is the model's own estimate for frame f-1 (rollout; detached), warped with
  the exact motion vectors; the depth test marks disoccluded tokens; frame 0 and cuts have none;
- each token gets the sampler's start level t0 (`strength` where history is kept, 1 elsewhere,
  strength drawn per clip) and the start x_init = (1 - t0) * warped + t0 * noise;
- the path is the straight line from x_init (at t0) to the oracle's latent z (at 0): at a random
  fraction u of the way, x_t = z + u * (x_init - z), t = u * t0, and the target velocity is
  (x_init - z) / t0, so Euler steps from x_init reach z. For disoccluded tokens this is plain flow
  matching from noise;
- the linear-attention sums carry from frame to frame with gradients (truncated at the clip);
- the decoder learns to turn the oracle's latent into the full-resolution target, guided by the
  G-buffers (L1).

The latent target is the oracle frame averaged down by `latent_stride`, in [-1, 1].

Few-step mode (`sampler_steps`, the distillation phase): each frame runs the service's sampler
itself, K Euler steps from x_init with K drawn per frame from `sampler_steps` (1, 2 and 4: one
model for every step count the service offers), gradients through every step. The loss is the
squared error of the clean latent it reaches against z, plus the decoder's L1 on *that* latent
(so the decoder learns to finish what the sampler leaves), and the next frame starts from it. The
targets are a function of the G-buffers and the prompt, so the teacher is the oracle itself: the
phase tightens the few-step trajectories the flow phase taught, rather than matching a slower
sampler's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...kernels.warp import warp_previous
from ..frame import PromptContext, prepare_frame
from ..network import StreamStyleModel
from ..sampler import flow_sample, initial_latent, start_levels, tokens_to_latent
from ..state import StateSpec
from .data import Clip


@dataclass(frozen=True)
class ObjectiveConfig:
    strength_min: float = 0.3
    strength_max: float = 0.8
    decoder_weight: float = 1.0
    rollout: bool = True  # False: the previous latent is the oracle's (teacher forcing)
    sampler_steps: tuple[int, ...] = ()  # non-empty: few-step mode, K drawn from these per frame


def stack_planes(clips: list[Clip], f: int) -> dict[str, torch.Tensor]:
    return {k: torch.stack([c.planes[f][k] for c in clips]) for k in clips[0].planes[f]}


def batch_loss(model: StreamStyleModel, clips: list[Clip], prompts: list[PromptContext], gen: torch.Generator,
               cfg: ObjectiveConfig = ObjectiveConfig()) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean loss over the clips' frames, and its parts. All clips share size and layout."""
    mc = model.config
    dev = next(model.parameters()).device
    b, w, h = len(clips), clips[0].width, clips[0].height
    lp, s = mc.latent_patch, mc.latent_stride
    grid = (h // mc.patch, w // mc.patch)
    state = StateSpec(mc, w, h, batch=b).zeros(dev)
    kv, ks, prev, prev_depth, has = state.kv, state.ks, state.latent, state.depth, state.valid
    ctx = PromptContext(torch.cat([p.tokens for p in prompts]), torch.cat([p.bias for p in prompts]),
                        torch.cat([p.pooled for p in prompts]))
    dt = next(model.parameters()).dtype
    fm_total, dec_total = 0.0, 0.0
    frames = len(clips[0].planes)
    for f in range(frames):
        planes = {k: v.to(dev) for k, v in stack_planes(clips, f).items()}
        inputs = prepare_frame(mc, clips[0].layout, planes, w, h)
        target = torch.stack([c.targets[f] for c in clips]).to(dev).permute(0, 3, 1, 2)  # [B, 3, H, W]
        z = F.avg_pool2d(target * 2 - 1, s)  # [B, 3, h, w]
        cut = torch.tensor([c.cut[f] for c in clips], device=dev)
        has = has * (~cut).float()
        kv = kv * (~cut).float().view(1, b, 1, 1, 1)
        ks = ks * (~cut).float().view(1, b, 1, 1)
        warped, valid = warp_previous(prev, prev_depth, inputs.motion, inputs.depth, mc.disocclusion_tolerance)
        strength = cfg.strength_min + (cfg.strength_max - cfg.strength_min) * torch.rand(b, 1, generator=gen).to(dev)
        t0 = start_levels(valid, has, strength, lp)  # [B, T]
        noise = torch.randn(z.shape, generator=gen).to(dev)
        x_init = initial_latent(warped, t0, noise, grid, lp)
        g = model.dit.embed_gbuffers(inputs.cond.to(dt))
        if cfg.sampler_steps:
            k = cfg.sampler_steps[int(torch.randint(len(cfg.sampler_steps), (1,), generator=gen))]
            kv_in, ks_in = kv, ks

            def denoise(x, t):
                v, kv_out, ks_out = model.dit(x.to(dt), t, g, ctx.tokens.to(dt), ctx.bias, ctx.pooled.to(dt),
                                              kv_in, ks_in)
                return v.float(), (kv_out, ks_out)

            x0_hat, (kv, ks) = flow_sample(denoise, x_init, t0, k, grid, lp)
            x0_hat = x0_hat.clamp(-1, 1)
            fm = F.mse_loss(x0_hat, z)
            rgb = model.decoder(x0_hat.to(dt), inputs.guide.to(dt)).float()
        else:
            u = torch.rand(b, 1, generator=gen).to(dev).clamp_min(1e-3)
            t = t0 * u
            t0_lat = tokens_to_latent(t0, grid, lp)
            x_t = z + u.view(b, 1, 1, 1) * (x_init - z)
            v_target = (x_init - z) / t0_lat
            v, kv, ks = model.dit(x_t.to(dt), t, g, ctx.tokens.to(dt), ctx.bias, ctx.pooled.to(dt), kv, ks)
            fm = F.mse_loss(v.float(), v_target)
            rgb = model.decoder(z.to(dt), inputs.guide.to(dt)).float()
            x0_hat = (x_t - tokens_to_latent(t, grid, lp) * v.float()).clamp(-1, 1)
        dec = F.l1_loss(rgb, target)
        fm_total = fm_total + fm
        dec_total = dec_total + dec
        prev = (x0_hat if cfg.rollout else z).detach()
        prev_depth = inputs.depth
        has = torch.ones_like(has)
    fm_total = fm_total / frames
    dec_total = dec_total / frames
    loss = fm_total + cfg.decoder_weight * dec_total
    first = "latent" if cfg.sampler_steps else "flow"
    return loss, {"loss": float(loss.detach()), first: float(fm_total.detach()), "decoder": float(dec_total.detach())}
