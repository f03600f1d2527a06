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

The cut, the warp, the depth test and the start levels are the frame function's own
(`frame.start_frame`), so training and serving start every frame the same way. A frame's random
choices (`FrameDraw`) come from the step's `StepRandomness` in a fixed order: each clip's own
(strength, noise, path position) from that clip's generator, seeded by (seed, step, the clip's
global index), and what the whole batch shares (the few-step phase's K) from one generator seeded
by (seed, step). So a step is a function of (seed, step), and a clip's draws do not depend on which
rank of a data-parallel run holds it or on how many clips share the rank. `frame_loss` is one frame
given the draws, and `batch_loss` threads the state through the clip with them.

Few-step mode (`sampler_steps`, the distillation phase): each frame is the service's frame
function itself, `frame.stylize_frame`, unrolled over the clip with gradients: K Euler steps from
x_init with K drawn per frame from `sampler_steps` (1, 2 and 4: one model for every step count the
service offers), gradients through every step, then the decoder. The loss is the
squared error of the clean latent it reaches against z, plus the decoder's L1 on *that* latent
(so the decoder learns to finish what the sampler leaves), and the next frame starts from it. The
targets are a function of the G-buffers and the prompt, so the teacher is the oracle itself: the
phase tightens the few-step trajectories the flow phase taught, rather than matching a slower
sampler's outputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..frame import FrameParams, PromptContext, prepare_frame, start_frame, stylize_frame
from ..layout import GBufferLayout
from ..network import StreamStyleModel
from ..sampler import tokens_to_latent
from ..state import StateSpec, TemporalState
from .data import Clip


@dataclass(frozen=True)
class ObjectiveConfig:
    strength_min: float = 0.3
    strength_max: float = 0.8
    decoder_weight: float = 1.0
    rollout: bool = True  # False: the previous latent is the oracle's (teacher forcing)
    sampler_steps: tuple[int, ...] = ()  # non-empty: few-step mode, K drawn from these per frame


@dataclass(frozen=True)
class FrameDraw:
    """One frame's random choices, drawn by `draw_frame` in this order."""

    strength: torch.Tensor  # [B, 1] the start level where history is kept
    noise: torch.Tensor  # [B, C, h, w] standard normal
    steps: int | None  # few-step phase: the sampler's K this frame; None in the flow phase
    u: torch.Tensor | None  # flow phase: how far along the path from the oracle's latent, [B, 1]


@dataclass
class FrameLoss:
    fm: torch.Tensor  # flow phase: velocity MSE; few-step phase: MSE of the latent reached against z
    decoder: torch.Tensor  # L1 of the decoded frame against the target
    rgb: torch.Tensor  # [B, 3, H, W] the decoded frame
    state: TemporalState  # the next state (its latent the model's estimate, not yet detached)


def stack_planes(clips: list[Clip], f: int) -> dict[str, torch.Tensor]:
    return {k: torch.stack([c.planes[f][k] for c in clips]) for k in clips[0].planes[f]}


def latent_target(target: torch.Tensor, stride: int) -> torch.Tensor:
    """The oracle frame [B, 3, H, W] in [0, 1] as a latent: averaged down by `stride`, in [-1, 1]."""
    return F.avg_pool2d(target * 2 - 1, stride)


def _generator(*key: int) -> torch.Generator:
    """A CPU generator seeded by a tuple of integers (a hash of them, so nearby keys do not give
    nearby seeds)."""
    digest = hashlib.blake2b(",".join(map(str, key)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


@dataclass(frozen=True)
class StepRandomness:
    """One training step's random sources. `clips[i]` draws clip i's own choices (strength, noise,
    path position), seeded by (seed, step, the clip's global index): the same whichever rank holds
    the clip and whichever clips share its batch. `shared` draws what the whole batch shares (the
    few-step phase's K per frame), seeded by (seed, step): the same on every rank."""

    shared: torch.Generator
    clips: tuple[torch.Generator, ...]

    @classmethod
    def seeded(cls, seed: int, step: int, clip_indices: Sequence[int]) -> "StepRandomness":
        return cls(_generator(seed, step), tuple(_generator(seed, step, i) for i in clip_indices))


def draw_frame(rand: StepRandomness, cfg: ObjectiveConfig, shape: tuple[int, ...], device) -> FrameDraw:
    """shape: the latent's [B, C, h, w], B = len(rand.clips). Each clip's generator gives its
    strength, its noise, then (flow phase) its u; the shared one gives K (few-step phase)."""
    if len(rand.clips) != shape[0]:
        raise ValueError(f"{len(rand.clips)} clip generators for a batch of {shape[0]}")
    strength, noise, u = [], [], []
    for gen in rand.clips:
        strength.append(torch.rand(1, generator=gen))
        noise.append(torch.randn(shape[1:], generator=gen))
        if not cfg.sampler_steps:
            u.append(torch.rand(1, generator=gen))
    strength = cfg.strength_min + (cfg.strength_max - cfg.strength_min) * torch.stack(strength).to(device)  # [B, 1]
    noise = torch.stack(noise).to(device)
    if cfg.sampler_steps:
        k = cfg.sampler_steps[int(torch.randint(len(cfg.sampler_steps), (1,), generator=rand.shared))]
        return FrameDraw(strength, noise, k, None)
    return FrameDraw(strength, noise, None, torch.stack(u).to(device).clamp_min(1e-3))


def frame_loss(model: StreamStyleModel, layout: GBufferLayout, planes: dict[str, torch.Tensor], width: int,
               height: int, target: torch.Tensor, prompt: PromptContext, state: TemporalState, cut: torch.Tensor,
               draw: FrameDraw) -> FrameLoss:
    """One frame of a clip as training runs it. planes {channel: [B, H, W, components]};
    target [B, 3, H, W] in [0, 1]; cut [B] bool. The few-step phase (`draw.steps` set) is the
    frame function itself, `stylize_frame`; the flow phase starts the frame as it does
    (`start_frame`) and takes one velocity step at a random point of the straight path."""
    mc = model.config
    z = latent_target(target, mc.latent_stride)  # [B, 3, h, w]
    if draw.steps is not None:
        rgb, nxt = stylize_frame(model, layout, planes, width, height, prompt, state, draw.noise,
                                 FrameParams(steps=draw.steps, strength=draw.strength, reset=cut))
        return FrameLoss(F.mse_loss(nxt.latent, z), F.l1_loss(rgb, target), rgb, nxt)
    b, lp = z.shape[0], mc.latent_patch
    grid = (z.shape[2] // lp, z.shape[3] // lp)
    dt = next(model.parameters()).dtype
    inputs = prepare_frame(mc, layout, planes, width, height)
    start = start_frame(mc, inputs, state, draw.noise, draw.strength, cut)
    g = model.dit.embed_gbuffers(inputs.cond.to(dt))
    t = start.t0 * draw.u
    x_t = z + draw.u.view(b, 1, 1, 1) * (start.x - z)
    v_target = (start.x - z) / tokens_to_latent(start.t0, grid, lp)
    v, kv, ks = model.dit(x_t.to(dt), t, g, prompt.tokens.to(dt), prompt.bias, prompt.pooled.to(dt),
                          start.state.kv, start.state.ks)
    rgb = model.decoder(z.to(dt), inputs.guide.to(dt)).float()
    x0_hat = (x_t - tokens_to_latent(t, grid, lp) * v.float()).clamp(-1, 1)
    nxt = TemporalState(kv=kv, ks=ks, latent=x0_hat, depth=inputs.depth, valid=torch.ones_like(state.valid))
    return FrameLoss(F.mse_loss(v.float(), v_target), F.l1_loss(rgb, target), rgb, nxt)


def batch_loss(model: StreamStyleModel, clips: list[Clip], prompts: list[PromptContext], rand: StepRandomness,
               cfg: ObjectiveConfig = ObjectiveConfig()) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean loss over the clips' frames, and its parts. All clips share size and layout;
    `rand.clips[i]` is clip i's generator. Every clip weighs the same in the mean, so the mean over
    a batch is the mean of its parts' means when they are of equal size (data-parallel ranks)."""
    mc = model.config
    dev = next(model.parameters()).device
    b, w, h = len(clips), clips[0].width, clips[0].height
    state = StateSpec(mc, w, h, batch=b).zeros(dev)
    ctx = PromptContext(torch.cat([p.tokens for p in prompts]), torch.cat([p.bias for p in prompts]),
                        torch.cat([p.pooled for p in prompts]))
    fm_total, dec_total = 0.0, 0.0
    frames = len(clips[0].planes)
    for f in range(frames):
        planes = {k: v.to(dev) for k, v in stack_planes(clips, f).items()}
        target = torch.stack([c.targets[f] for c in clips]).to(dev).permute(0, 3, 1, 2)  # [B, 3, H, W]
        cut = torch.tensor([c.cut[f] for c in clips], device=dev)
        out = frame_loss(model, clips[0].layout, planes, w, h, target, ctx, state, cut,
                         draw_frame(rand, cfg, tuple(state.latent.shape), dev))
        fm_total = fm_total + out.fm
        dec_total = dec_total + out.decoder
        # The attention sums carry with gradients (truncated at the clip); the latent does not.
        latent = out.state.latent if cfg.rollout else latent_target(target, mc.latent_stride)
        state = dataclasses.replace(out.state, latent=latent.detach())
    fm_total = fm_total / frames
    dec_total = dec_total / frames
    loss = fm_total + cfg.decoder_weight * dec_total
    first = "latent" if cfg.sampler_steps else "flow"
    return loss, {"loss": float(loss.detach()), first: float(fm_total.detach()), "decoder": float(dec_total.detach())}
