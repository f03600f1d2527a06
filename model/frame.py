"""The frame function: one frame's planes and the session's state in, the frame and the next state out.

`stylize_frame` is the whole per-frame computation, and its only copy: pack the engine's planes
(`prepare_frame`), apply a camera cut and warp the previous latent with the depth test, set each
token's start level (`start_frame`), run 1-4 DiT steps (`sampler.flow_sample`), warp the previous
full-resolution frame with the same depth test (`frame_history`), finish the frame at full
resolution with it (`refiner.Refiner`), write it as RGB or straight into an engine output slot,
and build the next state (the frame itself is the next history). Everything runs it: the service's
eager step (`Stylizer.step` / `step_into`), the CUDA graph (`FrameGraph` captures this function),
`streamstyle bench` (the timed step is `Stylizer.step_into`; the stage breakdown runs this function
with `trace`), evaluation (through `Stylizer`) and training's few-step phase, which unrolls it over
a clip with gradients (`training/objective.py`). tests/test_frame_function.py pins that a training
unroll and the service's step agree.

What always holds:
- Pure: the state comes in as an argument and the next one goes out as the return value, same
  structure and shapes (`state` itself is not modified); the noise comes in too, so the caller
  owns randomness. Nothing is kept between calls.
- Capturable: for one (layout, size, steps) the shapes are fixed, and there is no host sync and no
  host-to-device copy inside; the per-frame values a graph changes between replays (strength, the
  cut flag) may be device tensors (`FrameParams`).
- One way to handle a camera cut: the caller says it (`FrameParams.reset`: the engine's flag in
  the service, the capture's or renderer's cut flag in training and evaluation), and
  `start_frame` alone applies it, by zeroing the attention sums and the has-history flag, so every
  token starts from noise. Without the flag the depth test still restarts every disoccluded token.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Callable

import torch

from ..kernels.gbuffer_pack import pack_gbuffers
from ..kernels.warp import warp_previous
from .config import ModelConfig
from .errors import InputError
from .layout import GBufferLayout, pack_specs
from .network import StreamStyleModel
from .sampler import MAX_STEPS, flow_sample, initial_latent, start_levels
from .state import TemporalState

# Layout channels the refiner reads when an engine has them (zeros in their place otherwise).
OPTIONAL_INPUTS = ("ids", "surface")


@dataclass(frozen=True)
class FrameParams:
    """A frame's controls. At the service's edge they are Python values (`validate`); inside a CUDA
    graph or a training batch, `strength` may be a device tensor broadcastable to [B, 1] and
    `reset` a [B] (or [1]) tensor, 1 on a cut, so one graph serves every frame."""

    steps: int = 2  # DiT steps this frame, 1 to 4 (fixes the graph: always a Python int)
    strength: float | torch.Tensor = 0.5  # noise level history restarts from; 1.0 ignores history
    reset: bool | torch.Tensor = False  # a camera cut: forget the temporal state before this frame

    def validate(self) -> "FrameParams":
        if not (isinstance(self.steps, int) and not isinstance(self.steps, bool) and 1 <= self.steps <= MAX_STEPS):
            raise InputError(f"steps must be an integer from 1 to {MAX_STEPS}, got {self.steps!r}")
        if not (isinstance(self.strength, (int, float)) and 0.0 <= float(self.strength) <= 1.0):
            raise InputError(f"strength must be a number in [0, 1], got {self.strength!r}")
        return self


@dataclass
class FrameInputs:
    cond: torch.Tensor  # [B, Ccond, h, w] normalised G-buffers at latent resolution
    guide: torch.Tensor  # [B, Cguide, H, W] normalised G-buffers at full resolution (may be a view of the packed planes)
    depth: torch.Tensor  # [B, 1, h, w] linear depth at latent-pixel centres
    motion: torch.Tensor  # [B, 2, h, w] current-to-previous offset, in latent pixels
    depth_full: torch.Tensor  # [B, 1, H, W] linear depth at full resolution
    motion_full: torch.Tensor  # [B, 2, H, W] current-to-previous offset, in pixels
    ids: torch.Tensor | None  # [B, H, W] object ids (the layout's, if it has them)
    surface: torch.Tensor | None  # [B, H, W, 3] object-space surface position (if the layout has it)


@dataclass
class FrameStart:
    """Where a frame's sampler starts (`start_frame`)."""

    x: torch.Tensor  # [B, C, h, w] the warped previous latent re-noised to t0; pure noise where t0 = 1
    t0: torch.Tensor  # [B, T] each token's start level: strength where history is kept, else 1
    state: TemporalState  # the state after the cut: the attention sums the DiT starts from


@dataclass
class PromptContext:
    tokens: torch.Tensor  # [B, L, Dt] token states of every blend part, padded
    bias: torch.Tensor  # [B, L] log(weight) on real tokens, -inf on padding
    pooled: torch.Tensor  # [B, Dt] blended sentence embedding


def padded_size(config: ModelConfig, width: int, height: int) -> tuple[int, int]:
    """The size the network runs at: width and height rounded up to the token stride."""
    p = config.patch
    return -(-width // p) * p, -(-height // p) * p


def pad_planes(planes: dict[str, torch.Tensor], width: int, height: int, pw: int, ph: int) -> dict[str, torch.Tensor]:
    """Extend [B, H, W, C] planes to [B, ph, pw, C] by repeating the last row and column (any
    dtype; graph-safe). Depth and motion carry on smoothly into the margin, so the warp and the
    depth test stay meaningful there, and the margin is cropped from the output. Each plane is
    written once into a new contiguous tensor (channels that share a plane share the padded one):
    a concatenation of the slot's strided views ran at a quarter of the copy's bandwidth, 0.27 ms
    of a 1080p frame (benchmarks/NOTES.md v0.20)."""
    if (pw, ph) == (width, height):
        return planes
    out: dict[str, torch.Tensor] = {}
    done: dict[tuple, torch.Tensor] = {}
    for name, x in planes.items():
        key = (x.data_ptr(), x.dtype, tuple(x.shape), x.stride())
        if key not in done:
            y = x.new_empty((x.shape[0], ph, pw, x.shape[3]))
            y[:, :height, :width].copy_(x)
            if ph > height:
                y[:, height:, :width].copy_(x[:, height - 1:height].expand(-1, ph - height, -1, -1))
            if pw > width:
                y[:, :, width:].copy_(y[:, :, width - 1:width].expand(-1, -1, pw - width, -1))
            done[key] = y
        out[name] = done[key]
    return out


def prepare_frame(config: ModelConfig, layout: GBufferLayout, planes: dict[str, torch.Tensor],
                  width: int, height: int) -> FrameInputs:
    """planes: {channel: [B, H, W, format components]} in the engine's dtypes (see
    `GBufferLayout.view`; a leading batch dim is required here). A size that is not a multiple of
    the token stride is padded (`padded_size`, `pad_planes`): the inputs are at the padded size, and
    the caller crops the output back to width x height."""
    names = list(config.cond_channels) + [n for n in config.guide_channels if n not in config.cond_channels]
    present = {ch.name for ch in layout.channels}
    optional = [n for n in OPTIONAL_INPUTS if n in present and n in planes]
    pw, ph = padded_size(config, width, height)
    if (pw, ph) != (width, height):
        planes = pad_planes({n: planes[n] for n in dict.fromkeys(names + ["depth", "motion"] + optional)},
                            width, height, pw, ph)
    specs = pack_specs(layout, names)
    s = config.latent_stride
    full, low = pack_gbuffers([planes[n] for n in names], specs, s)
    ncond = sum(spec.count for spec in specs[:len(config.cond_channels)])
    offsets, at = {}, 0
    for name, spec in zip(names, specs):
        offsets[name] = (at, at + spec.count)
        at += spec.count
    runs = [offsets[n] for n in config.guide_channels]
    if all(a[1] == b[0] for a, b in zip(runs, runs[1:])):  # one run of `full`'s channels: a view, no copy
        guide = full[:, runs[0][0]:runs[-1][1]]
    else:
        guide = torch.cat([full[:, slice(*r)] for r in runs], dim=1)
    c = s // 2  # latent-pixel centre inside each s x s block
    dch, mch = layout["depth"], layout["motion"]
    depth = planes["depth"][:, c::s, c::s, dch.first:dch.first + 1].permute(0, 3, 1, 2).float()
    sx, sy = layout.motion_scale(width, height)
    raw = planes["motion"][:, c::s, c::s, mch.first:mch.first + 2].permute(0, 3, 1, 2).float()
    # Python scalars, not a device tensor: no host-to-device copy, so this can run inside a CUDA graph.
    motion = torch.stack((raw[:, 0] * (sx / s), raw[:, 1] * (sy / s)), dim=1)
    depth_full = planes["depth"][..., dch.first:dch.first + 1].permute(0, 3, 1, 2).float()
    raw = planes["motion"][..., mch.first:mch.first + 2].float()
    motion_full = torch.stack((raw[..., 0] * sx, raw[..., 1] * sy), dim=1)
    ids = surface = None
    if "ids" in optional:
        ids = planes["ids"][..., layout["ids"].first]
    if "surface" in optional:
        sch = layout["surface"]
        surface = planes["surface"][..., sch.first:sch.first + 3]
    return FrameInputs(cond=low[:, :ncond], guide=guide, depth=depth, motion=motion, depth_full=depth_full,
                       motion_full=motion_full, ids=ids, surface=surface)


def start_frame(config: ModelConfig, inputs: FrameInputs, state: TemporalState, noise: torch.Tensor,
                strength: float | torch.Tensor, reset: bool | torch.Tensor) -> FrameStart:
    """The camera cut, the warp with its depth test, and each token's start level and latent.
    noise [B, C, h, w] standard normal; `strength`, `reset` as in `FrameParams`. On a cut the
    attention sums and the has-history flag are zeroed (the previous latent and depth stay, unused:
    no token keeps history). The training objective's flow phase starts its frames here too."""
    if isinstance(reset, torch.Tensor):
        keep = 1.0 - reset.float().reshape(-1)  # [B] or [1]
        keep_kv, keep_ks = keep.view(1, -1, 1, 1, 1), keep.view(1, -1, 1, 1)
    else:  # a Python number: no host-to-device copy
        keep = keep_kv = keep_ks = 0.0 if reset else 1.0
    kept = dataclasses.replace(state, kv=state.kv * keep_kv, ks=state.ks * keep_ks, valid=state.valid * keep)
    lp = config.latent_patch
    _, _, h, w = noise.shape
    warped, valid = warp_previous(kept.latent, kept.depth, inputs.motion, inputs.depth, config.disocclusion_tolerance)
    t0 = start_levels(valid, kept.valid, strength, lp)  # [B, T]
    x = initial_latent(warped, t0, noise, (h // lp, w // lp), lp, config.history_noise)
    return FrameStart(x=x, t0=t0, state=kept)


def stylize_frame(model: StreamStyleModel, layout: GBufferLayout, planes: dict[str, torch.Tensor], width: int,
                  height: int, prompt: PromptContext, state: TemporalState, noise: torch.Tensor,
                  params: FrameParams, out: tuple[torch.Tensor, str] | None = None,
                  trace: Callable[[str], None] | None = None) -> tuple[torch.Tensor | None, TemporalState]:
    """Stylize one frame.

    planes: {channel: [B, H, W, components]} in the engine's dtypes (`GBufferLayout.view` with a
    batch dim), H x W = height x width; prompt: a context of batch B or 1; state: the session's
    state at the padded size (`padded_size`); noise [B, C, h, w] standard normal at that size.
    Returns RGB [B, 3, height, width] in [0, 1] (the padding margin cropped) and the next state
    (new tensors). With `out` = (bytes, format) the frame (B = 1) is decoded straight into an
    engine output slot instead (`kernels.writeback`) and None is returned for the RGB.
    `trace`, if given, is called with each stage's name as it ends (pack, warp, dit_1 .. dit_K,
    history, decode): a host-side hook for the bench, it sees no tensor.
    Gradients flow when the caller enables them (training unrolls this function over a clip)."""
    cfg = model.config
    mark = trace if trace is not None else (lambda stage: None)
    lp = cfg.latent_patch
    _, _, h, w = noise.shape
    grid = (h // lp, w // lp)
    inputs = prepare_frame(cfg, layout, planes, width, height)
    mark("pack")
    # The network runs in its parameters' dtype (bf16 on a GPU); the sampler integrates, and the
    # state is kept, in float32.
    dt = next(model.parameters()).dtype
    start = start_frame(cfg, inputs, state, noise, params.strength, params.reset)
    g = model.dit.embed_gbuffers(inputs.cond.to(dt))  # [B, T, D], once per frame
    ctx, pooled = prompt.tokens.to(dt), prompt.pooled.to(dt)
    mark("warp")
    calls = itertools.count(1)

    def denoise(x: torch.Tensor, t: torch.Tensor):
        v, kv, ks = model.dit(x.to(dt), t, g, ctx, prompt.bias, pooled, start.state.kv, start.state.ks)
        mark(f"dit_{next(calls)}")
        return v.float(), (kv, ks)

    x0, (kv, ks) = flow_sample(denoise, start.x, start.t0, params.steps, grid, lp)
    x0 = x0.clamp(-1.0, 1.0)
    rgb_full = finish_frame(model, inputs, start.state, x0, pooled, width, height, out, mark)
    rgb = rgb_full[:, :, :height, :width] if out is None else None
    nxt = TemporalState(kv=kv, ks=ks, latent=x0.float(), depth=inputs.depth.float(),
                        valid=torch.ones_like(state.valid), image=rgb_full, image_depth=inputs.depth_full)
    return rgb, nxt


def finish_frame(model: StreamStyleModel, inputs: FrameInputs, state: TemporalState, latent: torch.Tensor,
                 pooled: torch.Tensor, width: int, height: int, out: tuple[torch.Tensor, str] | None = None,
                 mark: Callable[[str], None] = lambda stage: None) -> torch.Tensor:
    """The frame at full resolution from the DiT's latent [B, 3, h, w] in [-1, 1]: the history
    (`frame_history`, `state` the one after the cut) and the refiner. Returns the padded frame
    [B, 3, ph, pw] float32 (the next frame's history); with `out`, also written into the slot.
    `stylize_frame` calls it, and so does training with the DiT frozen (`training/objective.py`),
    on latents the frame function produced."""
    history, mask = frame_history(model.config, inputs, state)
    mark("history")
    # The guide goes in as packed (float32): the refiner's input assembly rounds it to its dtype.
    rgb_full = model.refiner(latent, inputs.guide, history, mask, inputs.ids, inputs.surface, pooled,
                             width, height, out=out)
    mark("decode")
    return rgb_full


def frame_history(config: ModelConfig, inputs: FrameInputs, state: TemporalState) -> tuple[torch.Tensor, torch.Tensor]:
    """The refiner's history: the previous output frame warped by the engine's motion vectors at
    full resolution, and its mask [B, 1, H, W] float (1 where the depth test keeps the pixel and the
    state holds a frame; 0 on disocclusion, on a cut and on the first frame). `state` is the one
    after the cut (`FrameStart.state`)."""
    warped, valid = warp_previous(state.image, state.image_depth, inputs.motion_full, inputs.depth_full,
                                  config.disocclusion_tolerance)
    return warped, valid.float() * state.valid.view(-1, 1, 1, 1)
