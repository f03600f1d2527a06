"""Temporal state of one session: what carries from frame t to frame t+1.

Per layer, the linear-attention running sums; the previous output latent and its depth (for the
warp and the disocclusion test); the previous output frame at full resolution and its depth (the
refiner's history, warped and depth-tested the same way); and whether they hold a frame yet. The size depends on the config
and the frame size only, never on how many frames ran. `StateSpec` fixes the field order and shapes
so a state flattens to one float32 vector (what the paged cache stores) and back, as views.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from .config import ModelConfig


@dataclass
class TemporalState:
    kv: torch.Tensor  # [depth, B, H, d, d] decayed sum of phi(k) v^T
    ks: torch.Tensor  # [depth, B, H, d] decayed sum of phi(k)
    latent: torch.Tensor  # [B, C, h, w] previous output latent
    depth: torch.Tensor  # [B, 1, h, w] previous linear depth at latent resolution
    valid: torch.Tensor  # [B] 1.0 where latent and depth hold a previous frame, else 0.0
    image: torch.Tensor  # [B, 3, H, W] previous output frame in [0, 1] at the (padded) full resolution
    image_depth: torch.Tensor  # [B, 1, H, W] its linear depth


@dataclass(frozen=True)
class StateSpec:
    config: ModelConfig
    width: int
    height: int
    batch: int = 1

    def shapes(self) -> dict[str, tuple[int, ...]]:
        c, b = self.config, self.batch
        h, w = self.height // c.latent_stride, self.width // c.latent_stride
        return {
            "kv": (c.depth, b, c.heads, c.head_dim, c.head_dim),
            "ks": (c.depth, b, c.heads, c.head_dim),
            "latent": (b, c.latent_channels, h, w),
            "depth": (b, 1, h, w),
            "valid": (b,),
            "image": (b, 3, self.height, self.width),
            "image_depth": (b, 1, self.height, self.width),
        }

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes().values())

    @property
    def nbytes(self) -> int:
        return 4 * self.numel

    def zeros(self, device: torch.device | str = "cpu") -> TemporalState:
        return TemporalState(**{k: torch.zeros(s, device=device) for k, s in self.shapes().items()})

    def unflatten(self, flat: torch.Tensor) -> TemporalState:
        """Views into flat [numel] float32."""
        parts, at = {}, 0
        for name, shape in self.shapes().items():
            n = math.prod(shape)
            parts[name] = flat[at:at + n].view(shape)
            at += n
        return TemporalState(**parts)

    def flatten(self, state: TemporalState) -> torch.Tensor:
        return torch.cat([getattr(state, f.name).reshape(-1).float() for f in dataclasses.fields(state)])
