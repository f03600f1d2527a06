"""Reference for the refiner's per-pixel input: every channel the full-resolution refiner reads,
assembled channels-last in plain PyTorch ops (the spec; what training runs, with gradients).

`refiner_features(latent, guide, history, mask, ids, surface, id_table, surface_weight,
surface_bias, stride, width, height, dtype)` -> x [B, H, W, Cin] in `dtype`, its channels in the
order `feature_channels` gives:

    base     3   F.interpolate(latent.to(dtype), scale_factor=stride, bilinear, align_corners=False)
    guide    Cg  guide.to(dtype)
    hist     3   (history.to(dtype) * 2 - 1) * mask.to(dtype)
    mask     1   mask.to(dtype)
    position 4   phase x, phase y: ((i % stride) + 0.5) * (2 / stride) - 1, the pixel's place inside
                 its latent pixel; screen x, y: (i + 0.5) * (2 / width) - 1 and (j + 0.5) * (2 /
                 height) - 1, with width x height the frame's real size (H x W may be padded past
                 it); computed in float32, then .to(dtype)
    ids      E   id_table[ids & (ID_BUCKETS - 1)].to(dtype); zeros when ids is None
    surface  2F  p = 2 pi * F.linear(surface.float(), w.float(), b.float()): sin(p) (F), then cos(p)
                 (F), .to(dtype); zeros when surface is None. The phase is float32 whatever the
                 weights' dtype: it runs to hundreds of cycles, where a bf16 phase would be mostly
                 rounding (a bf16 step at 256 cycles is 2 cycles)

Each line is one PyTorch op chain in `dtype` (bf16 on a GPU: every op rounds its result to bf16),
and the fused kernel reproduces those roundings. A table or a Linear that is absent (None) has no
channels. `check_features` is the inputs' contract, shared by both backends.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # the activations' dtypes
ID_BUCKETS = 256  # object ids are embedded by their low 8 bits
LATENT_CHANNELS = 3  # the latent is RGB
POSITION_CHANNELS = 4


class FeatureChannels(NamedTuple):
    """Where each input starts in x's channels (the refiner's stages pick base, hist and mask)."""
    base: int
    guide: int
    hist: int
    mask: int
    position: int
    ids: int
    surface: int  # sin of each feature, then cos of each
    total: int


def feature_channels(guide: int, id_features: int, surface_features: int) -> FeatureChannels:
    """The channel layout for `guide` guide channels, an id embedding `id_features` wide and
    `surface_features` Fourier features (either may be 0)."""
    hist = LATENT_CHANNELS + guide
    ids = hist + 3 + 1 + POSITION_CHANNELS
    surface = ids + id_features
    return FeatureChannels(0, LATENT_CHANNELS, hist, hist + 3, hist + 4, ids, surface, surface + 2 * surface_features)


def refiner_features(latent: torch.Tensor, guide: torch.Tensor, history: torch.Tensor, mask: torch.Tensor,
                     ids: torch.Tensor | None, surface: torch.Tensor | None, id_table: torch.Tensor | None,
                     surface_weight: torch.Tensor | None, surface_bias: torch.Tensor | None, stride: int,
                     width: int, height: int, dtype: torch.dtype) -> torch.Tensor:
    """latent [B, 3, h, w]; guide [B, Cg, H, W]; history [B, 3, H, W] in [0, 1]; mask [B, 1, H, W];
    ids [B, H, W] integer or None; surface [B, H, W, 3] or None; id_table [ID_BUCKETS, E] or None;
    surface_weight [F, 3] and surface_bias [F], or both None; H = h * stride, W = w * stride.
    Returns x [B, H, W, Cin] contiguous in `dtype` (see the module docstring)."""
    b, _, hh, ww = guide.shape
    dev = guide.device
    s = stride
    base = F.interpolate(latent.to(dtype), scale_factor=s, mode="bilinear", align_corners=False)
    hist = (history.to(dtype) * 2 - 1) * mask.to(dtype)
    xs = torch.arange(ww, device=dev, dtype=torch.float32)
    ys = torch.arange(hh, device=dev, dtype=torch.float32)
    phase_x = ((xs % s) + 0.5) * (2.0 / s) - 1.0
    phase_y = ((ys % s) + 0.5) * (2.0 / s) - 1.0
    screen_x = (xs + 0.5) * (2.0 / width) - 1.0
    screen_y = (ys + 0.5) * (2.0 / height) - 1.0
    pos = torch.stack((phase_x.view(1, ww).expand(hh, ww), phase_y.view(hh, 1).expand(hh, ww),
                       screen_x.view(1, ww).expand(hh, ww), screen_y.view(hh, 1).expand(hh, ww)), dim=-1)
    parts = [base.permute(0, 2, 3, 1), guide.to(dtype).permute(0, 2, 3, 1), hist.permute(0, 2, 3, 1),
             mask.to(dtype).permute(0, 2, 3, 1), pos.to(dtype).expand(b, hh, ww, POSITION_CHANNELS)]
    if id_table is not None:
        if ids is None:
            parts.append(torch.zeros(b, hh, ww, id_table.shape[1], device=dev, dtype=dtype))
        else:
            parts.append(F.embedding(ids.long() & (ID_BUCKETS - 1), id_table).to(dtype))
    if surface_weight is not None:
        f = surface_weight.shape[0]
        if surface is None:
            parts.append(torch.zeros(b, hh, ww, 2 * f, device=dev, dtype=dtype))
        else:
            phase = (2 * math.pi) * F.linear(surface.float(), surface_weight.float(), surface_bias.float())
            parts.append(torch.cat((torch.sin(phase), torch.cos(phase)), dim=-1).to(dtype))
    return torch.cat(parts, dim=-1).contiguous()


def _fail(message: str) -> None:
    raise ValueError(f"refiner features: {message}")


def _shape(name: str, t: torch.Tensor, want: tuple) -> None:
    if tuple(t.shape) != tuple(want):
        _fail(f"{name} must be {list(want)}, got {list(t.shape)}")


def _int(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        _fail(f"{name} must be a positive int, got {v!r}")


def check_features(latent, guide, history, mask, ids, surface, id_table, surface_weight, surface_bias, stride,
                   width, height, dtype, out=None) -> None:
    """Raises ValueError unless the inputs fit together: shapes, dtypes, one device, the latent
    `stride` times smaller than the guide, the frame's real size inside the (padded) guide, and
    `out` (if given) exactly what the op would allocate."""
    if dtype not in DTYPES:
        _fail(f"dtype must be float32, bfloat16 or float16, not {dtype}")
    _int("stride", stride)
    if guide.dim() != 4 or min(guide.shape) < 1:
        _fail(f"guide must be a non-empty [B, Cg, H, W], got {list(guide.shape)}")
    b, _, hh, ww = guide.shape
    if hh % stride or ww % stride:
        _fail(f"the guide's {ww}x{hh} is not a multiple of the latent stride {stride}")
    _shape("latent", latent, (b, LATENT_CHANNELS, hh // stride, ww // stride))
    _shape("history", history, (b, 3, hh, ww))
    _shape("mask", mask, (b, 1, hh, ww))
    _int("width", width)
    _int("height", height)
    if width > ww or height > hh:
        _fail(f"a {width}x{height} frame does not fit the {ww}x{hh} guide")
    floats = [("latent", latent), ("guide", guide), ("history", history), ("mask", mask)]
    if ids is not None:
        _shape("ids", ids, (b, hh, ww))
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            _fail(f"ids must be an integer tensor, not {ids.dtype}")
    if surface is not None:
        _shape("surface", surface, (b, hh, ww, 3))
        floats.append(("surface", surface))
    if id_table is not None:
        if id_table.dim() != 2 or id_table.shape[0] != ID_BUCKETS:
            _fail(f"id_table must be [{ID_BUCKETS}, E], got {list(id_table.shape)}")
        floats.append(("id_table", id_table))
    if (surface_weight is None) != (surface_bias is None):
        _fail("the surface Linear needs both surface_weight and surface_bias")
    if surface_weight is not None:
        if surface_weight.dim() != 2 or surface_weight.shape[1] != 3:
            _fail(f"surface_weight must be [F, 3], got {list(surface_weight.shape)}")
        _shape("surface_bias", surface_bias, (surface_weight.shape[0],))
        if surface_bias.dtype != surface_weight.dtype:
            _fail(f"surface_bias is {surface_bias.dtype}, surface_weight {surface_weight.dtype}: one Linear has one dtype")
        floats += [("surface_weight", surface_weight), ("surface_bias", surface_bias)]
    for name, t in floats + ([("ids", ids)] if ids is not None else []):
        if t.device != guide.device:
            _fail(f"{name} is on {t.device}, the guide on {guide.device}")
    for name, t in floats:
        if not t.is_floating_point():
            _fail(f"{name} must be a float tensor, not {t.dtype}")
    if out is not None:
        want = (b, hh, ww, feature_channels(guide.shape[1], id_table.shape[1] if id_table is not None else 0,
                                            surface_weight.shape[0] if surface_weight is not None else 0).total)
        if tuple(out.shape) != want or out.dtype != dtype or out.device != guide.device or not out.is_contiguous():
            _fail(f"out must be a contiguous {dtype} {list(want)} on {guide.device}, got {out.dtype} "
                  f"{list(out.shape)} on {out.device}{'' if out.is_contiguous() else ' (not contiguous)'}")
