"""One frame, as pure functions: engine buffers to network inputs, and inputs + state to output.

`prepare_frame` turns a frame's raw planes (per the session's layout) into the network's inputs:
normalised conditioning at latent resolution, the full-resolution guide for the decoder, and the
depth and motion the warp needs, point-sampled at latent-pixel centres. `stylize_frame` is the whole
per-frame computation: warp, per-token noise levels, 1-4 DiT steps, decode. It takes the session's
state and returns the next one; the service, evaluation and training all call this same function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels.gbuffer_pack import pack_gbuffers
from ..kernels.warp import warp_previous
from .config import ModelConfig
from .errors import InputError
from .layout import GBufferLayout, pack_specs
from .network import StreamStyleModel
from .sampler import MAX_STEPS, flow_sample, initial_latent, start_levels
from .state import TemporalState


@dataclass(frozen=True)
class FrameParams:
    steps: int = 2  # DiT steps this frame, 1 to 4
    strength: float = 0.5  # noise level history restarts from; 1.0 ignores history
    reset: bool = False  # a camera cut: forget the temporal state before this frame

    def validate(self) -> "FrameParams":
        if not (isinstance(self.steps, int) and not isinstance(self.steps, bool) and 1 <= self.steps <= MAX_STEPS):
            raise InputError(f"steps must be an integer from 1 to {MAX_STEPS}, got {self.steps!r}")
        if not (isinstance(self.strength, (int, float)) and 0.0 <= float(self.strength) <= 1.0):
            raise InputError(f"strength must be a number in [0, 1], got {self.strength!r}")
        return self


@dataclass
class FrameInputs:
    cond: torch.Tensor  # [B, Ccond, h, w] normalised G-buffers at latent resolution
    guide: torch.Tensor  # [B, Cguide, H, W] normalised G-buffers at full resolution
    depth: torch.Tensor  # [B, 1, h, w] linear depth at latent-pixel centres
    motion: torch.Tensor  # [B, 2, h, w] current-to-previous offset, in latent pixels


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
    depth test stay meaningful there, and the margin is cropped from the output."""
    if (pw, ph) == (width, height):
        return planes
    out = {}
    for name, x in planes.items():
        if ph > height:
            x = torch.cat([x, x[:, height - 1:height].expand(-1, ph - height, -1, -1)], dim=1)
        if pw > width:
            x = torch.cat([x, x[:, :, width - 1:width].expand(-1, -1, pw - width, -1)], dim=2)
        out[name] = x
    return out


def prepare_frame(config: ModelConfig, layout: GBufferLayout, planes: dict[str, torch.Tensor],
                  width: int, height: int) -> FrameInputs:
    """planes: {channel: [B, H, W, format components]} in the engine's dtypes (see
    `GBufferLayout.view`; a leading batch dim is required here). A size that is not a multiple of
    the token stride is padded (`padded_size`, `pad_planes`): the inputs are at the padded size, and
    the caller crops the output back to width x height."""
    names = list(config.cond_channels) + [n for n in config.guide_channels if n not in config.cond_channels]
    pw, ph = padded_size(config, width, height)
    if (pw, ph) != (width, height):
        planes = pad_planes({n: planes[n] for n in dict.fromkeys(names + ["depth", "motion"])}, width, height, pw, ph)
    specs = pack_specs(layout, names)
    s = config.latent_stride
    full, low = pack_gbuffers([planes[n] for n in names], specs, s)
    ncond = sum(spec.count for spec in specs[:len(config.cond_channels)])
    offsets, at = {}, 0
    for name, spec in zip(names, specs):
        offsets[name] = (at, at + spec.count)
        at += spec.count
    guide = torch.cat([full[:, slice(*offsets[n])] for n in config.guide_channels], dim=1)
    c = s // 2  # latent-pixel centre inside each s x s block
    dch, mch = layout["depth"], layout["motion"]
    depth = planes["depth"][:, c::s, c::s, dch.first:dch.first + 1].permute(0, 3, 1, 2).float()
    sx, sy = layout.motion_scale(width, height)
    raw = planes["motion"][:, c::s, c::s, mch.first:mch.first + 2].permute(0, 3, 1, 2).float()
    # Python scalars, not a device tensor: no host-to-device copy, so this can run inside a CUDA graph.
    motion = torch.stack((raw[:, 0] * (sx / s), raw[:, 1] * (sy / s)), dim=1)
    return FrameInputs(cond=low[:, :ncond], guide=guide, depth=depth, motion=motion)


def stylize_frame(model: StreamStyleModel, inputs: FrameInputs, prompt: PromptContext,
                  state: TemporalState, noise: torch.Tensor,
                  params: FrameParams, rgba: tuple | None = None) -> tuple[torch.Tensor | None, TemporalState]:
    """Stylize one frame. noise [B, C, h, w] standard normal. Returns RGB [B, 3, H, W] in [0, 1]
    and the next state (new tensors; `state` is not modified). `rgba`: see `stylize_frame_tensors`."""
    if params.reset:
        state = TemporalState(kv=torch.zeros_like(state.kv), ks=torch.zeros_like(state.ks),
                              latent=state.latent, depth=state.depth, valid=torch.zeros_like(state.valid))
    return stylize_frame_tensors(model, inputs, prompt, state, noise, params.steps, params.strength, rgba=rgba)


def stylize_frame_tensors(model: StreamStyleModel, inputs: FrameInputs, prompt: PromptContext,
                          state: TemporalState, noise: torch.Tensor, steps: int,
                          strength: float | torch.Tensor, keep: torch.Tensor | None = None,
                          rgba: tuple | None = None) -> tuple[torch.Tensor | None, TemporalState]:
    """`stylize_frame` with the per-frame values as tensors, so one CUDA graph serves every frame:
    strength a [1] tensor, and `keep` [1] (0 on a camera cut, else 1) multiplying the state in.
    No host syncs and no host-to-device copies inside. With `rgba` = (out, format, width, height)
    the frame is decoded straight into `out` (an output slot's bytes, see
    `GuidedDecoder.forward_rgba`) and None is returned in place of the RGB tensor."""
    cfg = model.config
    lp = cfg.latent_patch
    _, _, h, w = noise.shape
    grid = (h // lp, w // lp)
    if keep is not None:
        state = TemporalState(kv=state.kv * keep, ks=state.ks * keep, latent=state.latent, depth=state.depth,
                              valid=state.valid * keep)
    # The network runs in its parameters' dtype (bf16 on a GPU); the sampler integrates, and the
    # state is kept, in float32.
    dt = next(model.parameters()).dtype
    g = model.dit.embed_gbuffers(inputs.cond.to(dt))  # [B, T, D], once per frame
    ctx, pooled = prompt.tokens.to(dt), prompt.pooled.to(dt)
    warped, valid = warp_previous(state.latent, state.depth, inputs.motion, inputs.depth,
                                  cfg.disocclusion_tolerance)
    t0 = start_levels(valid, state.valid, strength, lp)  # [B, T]
    x = initial_latent(warped, t0, noise, grid, lp)

    def denoise(x: torch.Tensor, t: torch.Tensor):
        v, kv, ks = model.dit(x.to(dt), t, g, ctx, prompt.bias, pooled, state.kv, state.ks)
        return v.float(), (kv, ks)

    x0, (kv, ks) = flow_sample(denoise, x, t0, steps, grid, lp)
    x0 = x0.clamp(-1.0, 1.0)
    if rgba is None:
        rgb = model.decoder(x0.to(dt), inputs.guide.to(dt)).float()
    else:
        model.decoder.forward_rgba(x0.to(dt), inputs.guide.to(dt), *rgba)
        rgb = None
    nxt = TemporalState(kv=kv, ks=ks, latent=x0.float(), depth=inputs.depth.float(),
                        valid=torch.ones_like(state.valid))
    return rgb, nxt
