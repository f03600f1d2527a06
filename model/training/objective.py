"""The training objective for one batch of clips, frame by frame as the service runs them.

Per frame f of each clip:
- the previous latent and the previous full-resolution frame are the model's own outputs for frame
  f-1 (rollout; detached), warped with the exact motion vectors; the depth test marks disoccluded
  tokens and pixels; frame 0 and cuts have none;
- each token gets the sampler's start level t0 (`strength` where history is kept, 1 elsewhere,
  strength drawn per clip) and the start x_init = (1 - t0) * warped + t0 * noise;
- **flow phase**: the path is the straight line from x_init (at t0) to the oracle's latent z (at 0):
  at a random fraction u of the way, x_t = z + u * (x_init - z), t = u * t0, and the target velocity
  is (x_init - z) / t0, so Euler steps from x_init reach z (for disoccluded tokens plain flow
  matching from noise); the refiner learns to finish the oracle's latent z with the history;
- **few-step phase** (`sampler_steps`): each frame is the service's frame function itself,
  `frame.stylize_frame`, unrolled over the clip with gradients: K Euler steps from x_init with K
  drawn per frame from `sampler_steps`, the refiner on the latent it reaches, and the next frame
  starts from what it produced: training sees what the sampler produces, history included;
- the linear-attention sums carry from frame to frame with gradients (truncated at the clip).

Losses per frame (`losses.py`; none needs downloaded weights): the latent's (velocity MSE, or the
squared error of the latent reached against z), and on the refined frame L1, `edge_loss`,
`perceptual_loss` and `grid_loss` (the error's pattern at the token stride) against the oracle, and
`temporal_loss`: the frame's change from its warped
previous output against the oracle's own change, on pixels with valid history.

History is deliberately corrupted on a share of frames (`corrupt_history`: shifted by a few pixels
and noised while its mask still says valid), so the refiner learns to weigh history by how well it
agrees with the frame rather than trusting the mask alone; the temporal term skips those frames.
Object ids and the surface channel are dropped from a share of steps (`drop_ids`,
`drop_surface`), so the model works for engines without them.

The latent target is the oracle frame averaged down by `latent_stride`, in [-1, 1]. The cut, the
warps, the depth tests and the start levels are the frame function's own (`frame.start_frame`,
`frame.frame_history`), so training and serving start every frame the same way. A frame's random
choices (`FrameDraw`) come from the step's `StepRandomness` in a fixed order: each clip's own
(strength, noise, path position, history corruption) from that clip's generator, seeded by (seed,
step, the clip's global index), and what the whole batch shares (the few-step phase's K, the
corruption's shift, which optional channels are dropped) from one generator seeded by (seed, step).
So a step is a function of (seed, step), and a clip's draws do not depend on which rank of a
data-parallel run holds it or on how many clips share the rank; every loss is a mean of per-clip
means, so the mean over a batch is the mean of its equal shares' means. `frame_loss` is one frame
given the draws, and `batch_loss` threads the state through the clip with them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ...kernels.warp import warp_previous
from ..frame import (FrameParams, PromptContext, finish_frame, frame_history, padded_size, prepare_frame,
                     start_frame, stylize_frame)
from ..layout import GBufferLayout
from ..network import StreamStyleModel
from ..sampler import tokens_to_latent
from ..state import StateSpec, TemporalState
from .data import Clip
from .losses import edge_loss, grid_loss, perceptual_loss, temporal_loss


@dataclass(frozen=True)
class ObjectiveConfig:
    strength_min: float = 0.3
    strength_max: float = 0.8
    decoder_weight: float = 1.0  # the refined frame's image losses (L1 + edge + perceptual + grid) as a whole
    edge_weight: float = 0.5
    perceptual_weight: float = 0.1
    grid_weight: float = 0.0  # the token-grid term (logged whatever its weight): a lead not yet trained with
    temporal_weight: float = 0.5
    corrupt_history: float = 0.15  # share of frames (after the first) whose history is corrupted
    drop_ids: float = 0.2  # share of steps trained without the ids channel
    drop_surface: float = 0.3  # share of steps trained without the surface channel
    rollout: bool = True  # False: the previous latent is the oracle's (teacher forcing)
    sampler_steps: tuple[int, ...] = ()  # non-empty: few-step mode, K drawn from these per frame


@dataclass(frozen=True)
class FrameDraw:
    """One frame's random choices, drawn by `draw_frame` in this order."""

    strength: torch.Tensor  # [B, 1] the start level where history is kept
    noise: torch.Tensor  # [B, C, h, w] standard normal
    steps: int | None  # few-step phase: the sampler's K this frame; None in the flow phase
    u: torch.Tensor | None  # flow phase: how far along the path from the oracle's latent, [B, 1]
    corrupt: tuple[bool, ...] | None = None  # per clip: corrupt its history before the frame (on the host)
    shift: tuple[int, int] = (0, 0)  # the corruption's shift in pixels (x, y)


@dataclass
class FrameLoss:
    fm: torch.Tensor  # flow phase: velocity MSE; few-step phase: MSE of the latent reached against z
    decoder: torch.Tensor  # the refined frame's weighted image losses against the target
    temporal: torch.Tensor  # the temporal term (0 without valid history)
    parts: dict[str, torch.Tensor]  # l1, edge, perceptual
    rgb: torch.Tensor  # [B, 3, H, W] the refined frame
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
    """One training step's random sources. `clips[i]` draws clip i's own choices, seeded by (seed,
    step, the clip's global index): the same whichever rank holds the clip and whichever clips share
    its batch. `shared` draws what the whole batch shares, seeded by (seed, step): the same on every
    rank."""

    shared: torch.Generator
    clips: tuple[torch.Generator, ...]

    @classmethod
    def seeded(cls, seed: int, step: int, clip_indices: Sequence[int]) -> "StepRandomness":
        return cls(_generator(seed, step), tuple(_generator(seed, step, i) for i in clip_indices))


def draw_frame(rand: StepRandomness, cfg: ObjectiveConfig, shape: tuple[int, ...], device) -> FrameDraw:
    """shape: the latent's [B, C, h, w], B = len(rand.clips). Each clip's generator gives its
    strength, its noise, whether its history is corrupted, then (flow phase) its u; the shared one
    gives the corruption's shift and (few-step phase) K."""
    if len(rand.clips) != shape[0]:
        raise ValueError(f"{len(rand.clips)} clip generators for a batch of {shape[0]}")
    strength, noise, corrupt, u = [], [], [], []
    for gen in rand.clips:
        strength.append(torch.rand(1, generator=gen))
        noise.append(torch.randn(shape[1:], generator=gen))
        corrupt.append(bool(torch.rand(1, generator=gen) < cfg.corrupt_history))
        if not cfg.sampler_steps:
            u.append(torch.rand(1, generator=gen))
    strength = cfg.strength_min + (cfg.strength_max - cfg.strength_min) * torch.stack(strength).to(device)
    noise = torch.stack(noise).to(device)
    corrupt = tuple(corrupt)
    sx, sy = (int(v) for v in torch.randint(-4, 5, (2,), generator=rand.shared))
    shift = (sx, sy or 1)
    if cfg.sampler_steps:
        k = cfg.sampler_steps[int(torch.randint(len(cfg.sampler_steps), (1,), generator=rand.shared))]
        return FrameDraw(strength, noise, k, None, corrupt, shift)
    return FrameDraw(strength, noise, None, torch.stack(u).to(device).clamp_min(1e-3), corrupt, shift)


def corrupt_history(state: TemporalState, draw: FrameDraw, rand: StepRandomness) -> TemporalState:
    """The state with the drawn clips' full-resolution history shifted by `draw.shift` and noised
    (its mask still says valid): what a wrong motion vector or a missed disocclusion hands the
    refiner. The noise of clip i comes from its own generator (drawn only for corrupted clips). The
    choice of clips is the host's (`draw.corrupt`): nothing here waits for the device."""
    if draw.corrupt is None or not any(draw.corrupt):
        return state
    img = state.image
    bad = torch.roll(img, shifts=(draw.shift[1], draw.shift[0]), dims=(2, 3))
    picked = [i for i, c in enumerate(draw.corrupt) if c]
    drawn = torch.stack([torch.randn(img.shape[1:], generator=rand.clips[i]) for i in picked])
    noise = torch.zeros_like(bad)
    noise[torch.tensor(picked).to(img.device)] = drawn.to(img.device).to(noise.dtype)
    bad = (bad + 0.1 * noise).clamp(0, 1).to(img.dtype)  # (the history's stored dtype)
    pick = torch.tensor(draw.corrupt).to(img.device).view(-1, 1, 1, 1)
    return dataclasses.replace(state, image=torch.where(pick, bad, img))


def image_losses(cfg: ObjectiveConfig, rgb: torch.Tensor, target: torch.Tensor, patch: int) -> tuple[torch.Tensor, dict]:
    """The refined frame's weighted image losses against the oracle, and each part; `patch` is the
    model's token stride (the grid term's period)."""
    l1 = F.l1_loss(rgb, target)
    edge = edge_loss(rgb, target)
    perc = perceptual_loss(rgb, target) if cfg.perceptual_weight else rgb.new_zeros(())
    grid = grid_loss(rgb, target, patch)
    total = l1 + cfg.edge_weight * edge + cfg.perceptual_weight * perc + cfg.grid_weight * grid
    return total, {"l1": l1, "edge": edge, "perceptual": perc, "grid": grid}


def frame_loss(model: StreamStyleModel, layout: GBufferLayout, planes: dict[str, torch.Tensor], width: int,
               height: int, target: torch.Tensor, prompt: PromptContext, state: TemporalState, cut: torch.Tensor,
               draw: FrameDraw, prev_target: torch.Tensor | None = None,
               cfg: ObjectiveConfig = ObjectiveConfig()) -> FrameLoss:
    """One frame of a clip as training runs it. planes {channel: [B, H, W, components]};
    target [B, 3, H, W] in [0, 1]; cut [B] bool; prev_target the previous frame's target (None on
    a clip's first frame: no temporal term). `state` comes in already corrupted where `draw` says
    (`corrupt_history`). The few-step phase (`draw.steps` set) is the frame function itself,
    `stylize_frame`; the flow phase starts the frame as it does (`start_frame`), takes one velocity
    step at a random point of the straight path, and refines the oracle's latent."""
    mc = model.config
    z = latent_target(target, mc.latent_stride)  # [B, 3, h, w]
    dt = next(model.parameters()).dtype
    inputs = prepare_frame(mc, layout, planes, width, height)
    if draw.steps is not None:
        rgb, nxt = stylize_frame(model, layout, planes, width, height, prompt, state, draw.noise,
                                 FrameParams(steps=draw.steps, strength=draw.strength, reset=cut))
        fm = F.mse_loss(nxt.latent, z)
        kept = start_frame(mc, inputs, state, draw.noise, draw.strength, cut).state
    else:
        b, lp = z.shape[0], mc.latent_patch
        grid = (z.shape[2] // lp, z.shape[3] // lp)
        start = start_frame(mc, inputs, state, draw.noise, draw.strength, cut)
        kept = start.state
        g = model.dit.embed_gbuffers(inputs.cond.to(dt))
        t = start.t0 * draw.u
        x_t = z + draw.u.view(b, 1, 1, 1) * (start.x - z)
        v_target = (start.x - z) / tokens_to_latent(start.t0, grid, lp)
        v, kv, ks = model.dit(x_t.to(dt), t, g, prompt.tokens.to(dt), prompt.bias, prompt.pooled.to(dt),
                              start.state.kv, start.state.ks)
        rgb_full = finish_frame(model, inputs, kept, z, prompt.pooled.to(dt), width, height)
        rgb = rgb_full[:, :, :height, :width]
        x0_hat = (x_t - tokens_to_latent(t, grid, lp) * v.float()).clamp(-1, 1)
        nxt = TemporalState(kv=kv, ks=ks, latent=x0_hat, depth=inputs.depth, valid=torch.ones_like(state.valid),
                            image=rgb_full, image_depth=inputs.depth_full)
        fm = F.mse_loss(v.float(), v_target)
    dec, parts, temporal = refined_losses(mc, cfg, inputs, kept, rgb, target, prev_target, draw, width, height)
    return FrameLoss(fm, dec, temporal, parts, rgb, nxt)


def refined_losses(mc, cfg: ObjectiveConfig, inputs, kept: TemporalState, rgb: torch.Tensor, target: torch.Tensor,
                   prev_target: torch.Tensor | None, draw: FrameDraw, width: int,
                   height: int) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """The refined frame's losses: its weighted image losses (with their parts) and the temporal
    term (0 on a clip's first frame, `prev_target` None). `kept` is the state after the cut, whose
    frame the history was warped from; corrupted clips (`draw.corrupt`) are left out of the
    temporal term."""
    dec, parts = image_losses(cfg, rgb, target, mc.patch)
    temporal = rgb.new_zeros(())
    if prev_target is not None and cfg.temporal_weight:
        history, mask = frame_history(mc, inputs, kept)
        prev_t = F.pad(prev_target, (0, history.shape[3] - width, 0, history.shape[2] - height), mode="replicate")
        warped_t, _ = warp_previous(prev_t, kept.image_depth, inputs.motion_full, inputs.depth_full,
                                    mc.disocclusion_tolerance)
        if draw.corrupt is not None:
            mask = mask * (~torch.tensor(draw.corrupt)).to(mask.device).float().view(-1, 1, 1, 1)
        crop = (slice(None), slice(None), slice(0, height), slice(0, width))
        temporal = temporal_loss(rgb, history[crop].detach(), target, warped_t[crop], mask[crop])
    return dec, parts, temporal


def frozen_frame_loss(model: StreamStyleModel, layout: GBufferLayout, planes: dict[str, torch.Tensor], width: int,
                      height: int, target: torch.Tensor, prompt: PromptContext, state: TemporalState,
                      cut: torch.Tensor, draw: FrameDraw, latent: torch.Tensor,
                      prev_target: torch.Tensor | None = None, cfg: ObjectiveConfig = ObjectiveConfig()) -> FrameLoss:
    """One frame with the DiT frozen: `latent` [B, 3, h, w] is what the frame function's DiT made
    of this frame (`dit_latents`), and the refiner finishes it with the history of its own previous
    output, through the frame function's own cut (`start_frame`) and tail (`finish_frame`). `fm` is
    the latent's squared error against the oracle's, a figure without gradient."""
    mc = model.config
    inputs = prepare_frame(mc, layout, planes, width, height)
    kept = start_frame(mc, inputs, state, draw.noise, draw.strength, cut).state
    dt = next(model.parameters()).dtype
    rgb_full = finish_frame(model, inputs, kept, latent, prompt.pooled.to(dt), width, height)
    rgb = rgb_full[:, :, :height, :width]
    fm = F.mse_loss(latent, latent_target(target, mc.latent_stride)).detach()
    nxt = TemporalState(kv=kept.kv, ks=kept.ks, latent=latent, depth=inputs.depth, valid=torch.ones_like(state.valid),
                        image=rgb_full, image_depth=inputs.depth_full)
    dec, parts, temporal = refined_losses(mc, cfg, inputs, kept, rgb, target, prev_target, draw, width, height)
    return FrameLoss(fm, dec, temporal, parts, rgb, nxt)


def dit_latents(model: StreamStyleModel, clips: Sequence[Clip], prompts: Sequence[PromptContext],
                gens: Sequence[torch.Generator], sampler_steps: Sequence[int],
                cfg: ObjectiveConfig = ObjectiveConfig()) -> list[list[torch.Tensor]]:
    """The DiT's side of the service's rollout over each clip, without gradients: each frame the
    frame function itself (`stylize_frame`) from the previous frame's state, with K steps (from
    `sampler_steps`) and a start strength (in the objective's range) drawn once for the clip from
    its generator (`gens[i]` for `clips[i]`), and fresh noise per frame from it, in that order.
    Returns each clip's per-frame latents [1, 3, h, w]. The DiT never reads the refiner's frame,
    so with the DiT frozen these do not change as the refiner learns: a run computes them once per
    clip (`frozen_frame_loss` takes them).

    Clips that share K, size, layout and length run as one batch (their strengths and cuts per
    clip): a clip's latents are its own draws' whichever clips it is computed with, up to the
    batched kernels' rounding (tested)."""
    mc = model.config
    dev = next(model.parameters()).device
    draws = []
    for gen in gens:
        k = sampler_steps[int(torch.randint(len(sampler_steps), (1,), generator=gen))]
        strength = cfg.strength_min + (cfg.strength_max - cfg.strength_min) * float(torch.rand(1, generator=gen))
        draws.append((k, strength))
    groups: dict[tuple, list[int]] = {}
    for i, (clip, (k, _)) in enumerate(zip(clips, draws)):
        groups.setdefault((k, clip.width, clip.height, clip.layout, len(clip.planes)), []).append(i)
    out: list[list[torch.Tensor]] = [[] for _ in clips]
    for (k, width, height, layout, frames), members in groups.items():
        group = [clips[i] for i in members]
        state = StateSpec(mc, *padded_size(mc, width, height), batch=len(members)).zeros(dev)
        per_clip = (1,) + tuple(state.latent.shape[1:])
        strength = torch.tensor([[draws[i][1]] for i in members]).to(dev)
        ctx = PromptContext(torch.cat([prompts[i].tokens for i in members]),
                            torch.cat([prompts[i].bias for i in members]),
                            torch.cat([prompts[i].pooled for i in members]))
        with torch.no_grad():
            for f in range(frames):
                noise = torch.cat([torch.randn(per_clip, generator=gens[i]) for i in members]).to(dev)
                planes = {name: v.to(dev) for name, v in stack_planes(group, f).items()}
                reset = torch.tensor([bool(c.cut[f]) for c in group]).to(dev)
                _, state = stylize_frame(model, layout, planes, width, height, ctx, state, noise,
                                         FrameParams(steps=k, strength=strength, reset=reset))
                for j, i in enumerate(members):
                    out[i].append(state.latent[j:j + 1].float())
    return out


def oracle_latents(clip: Clip, config, device: torch.device) -> list[torch.Tensor]:
    """The clip's per-frame oracle latents (`latent_target` of its targets), padded (edge-replicated)
    to the network's padded latent size (what the DiT's latents for the clip have), on `device`:
    what a perfect DiT would hand the refiner (`TrainConfig.exact_latents`)."""
    pw, ph = padded_size(config, clip.width, clip.height)
    s = config.latent_stride
    out = []
    for target in clip.targets:
        z = latent_target(target.permute(2, 0, 1)[None].float().to(device), s)
        pad = (0, pw // s - z.shape[3], 0, ph // s - z.shape[2])
        out.append(F.pad(z, pad, mode="replicate") if any(pad) else z)
    return out


def batch_loss(model: StreamStyleModel, clips: list[Clip], prompts: list[PromptContext], rand: StepRandomness,
               cfg: ObjectiveConfig = ObjectiveConfig(),
               latents: Sequence[Sequence[torch.Tensor]] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean loss over the clips' frames, and its parts. All clips share size and layout;
    `rand.clips[i]` is clip i's generator. Every clip weighs the same in the mean, so the mean over
    a batch is the mean of its parts' means when they are of equal size (data-parallel ranks).
    With `latents` (clip i's per-frame latents, `dit_latents`) the DiT is frozen: each frame is
    `frozen_frame_loss` and only the refined frame's losses count."""
    mc = model.config
    dev = next(model.parameters()).device
    b, w, h = len(clips), clips[0].width, clips[0].height
    state = StateSpec(mc, *padded_size(mc, w, h), batch=b).zeros(dev)
    ctx = PromptContext(torch.cat([p.tokens for p in prompts]), torch.cat([p.bias for p in prompts]),
                        torch.cat([p.pooled for p in prompts]))
    totals: dict[str, torch.Tensor | float] = {}
    frames = len(clips[0].planes)
    r = torch.rand(2, generator=rand.shared)  # which optional channels this step trains without
    drop_ids, drop_surface = bool(r[0] < cfg.drop_ids), bool(r[1] < cfg.drop_surface)
    prev_target = None
    for f in range(frames):
        planes = {k: v.to(dev) for k, v in stack_planes(clips, f).items()
                  if not (k == "ids" and drop_ids) and not (k == "surface" and drop_surface)}
        target = torch.stack([c.targets[f] for c in clips]).to(dev).permute(0, 3, 1, 2)  # [B, 3, H, W]
        cut = torch.tensor([bool(c.cut[f]) for c in clips]).to(dev)
        draw = draw_frame(rand, cfg, tuple(state.latent.shape), dev)
        if f:
            state = corrupt_history(state, draw, rand)
        else:
            draw = dataclasses.replace(draw, corrupt=None)
        if latents is None:
            out = frame_loss(model, clips[0].layout, planes, w, h, target, ctx, state, cut, draw,
                             prev_target if f else None, cfg)
        else:
            latent = torch.cat([lat[f] for lat in latents]).to(dev)
            out = frozen_frame_loss(model, clips[0].layout, planes, w, h, target, ctx, state, cut, draw, latent,
                                    prev_target if f else None, cfg)
        for name, value in (("fm", out.fm), ("decoder", out.decoder), ("temporal", out.temporal), *out.parts.items()):
            totals[name] = totals.get(name, 0.0) + value
        # The attention sums carry with gradients (truncated at the clip); the latent and the frame do
        # not. The frame carries rounded to its stored dtype, as the service's cache holds it.
        latent = out.state.latent if cfg.rollout else latent_target(target, mc.latent_stride)
        state = dataclasses.replace(out.state, latent=latent.detach(),
                                    image=out.state.image.detach().to(StateSpec.dtype("image")))
        prev_target = target
    means = {k: v / frames for k, v in totals.items()}
    loss = cfg.decoder_weight * means["decoder"] + cfg.temporal_weight * means["temporal"]
    if latents is None:
        loss = loss + means["fm"]
    first = "latent" if cfg.sampler_steps or latents is not None else "flow"
    parts = {"loss": float(loss.detach()), first: float(means["fm"].detach()),
             "decoder": float(means["decoder"].detach()), "temporal": float(torch.as_tensor(means["temporal"]).detach())}
    parts.update({k: float(means[k].detach()) for k in ("l1", "edge", "perceptual", "grid")})
    return loss, parts
