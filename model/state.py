"""Temporal state of one session: what carries from frame t to frame t+1.

Per layer, the linear-attention running sums; the previous output latent and its depth (for the
warp and the disocclusion test); the previous output frame at full resolution and its depth (the
refiner's history, warped and depth-tested the same way); and whether they hold a frame yet. The size depends on the config
and the frame size only, never on how many frames ran. `StateSpec` fixes the field order, shapes and
stored dtypes so a state flattens to one float32 vector (what the paged cache stores) and back, as
views.

The full-resolution history frame (`image`) is stored in bfloat16, two values to a float32 word
(`STORED_DTYPES`): it is most of a session's bytes (at 1920x1088, 25 MB of 36 MB in float32) and it
is read and written every frame. On a GPU the refiner reads it as bf16 anyway (its input features
are in the weights' dtype), so what the stored rounding changes is only where the warp interpolates
between rounded values (tests/test_state_dtypes.py measures it against a float32 state). Its depth
stays float32: the disocclusion test compares depths relatively, and bf16 keeps only 8 bits.
The words holding bf16 pairs are moved only by copies (gather, scatter, select, cat), never by
arithmetic, so their bit patterns survive even where they read as float32 NaNs or denormals.
Training keeps its state in memory in float32 (it never goes through the cache).
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
    image: torch.Tensor  # [B, 3, H, W] previous output frame in [0, 1] at the (padded) full resolution (bf16 when stored)
    image_depth: torch.Tensor  # [B, 1, H, W] its linear depth


# Fields stored in a narrower dtype than float32 (every other field is float32). A narrower field
# takes ceil(numel * itemsize / 4) float32 words of the flat state.
STORED_DTYPES: dict[str, torch.dtype] = {"image": torch.bfloat16}


def _words(numel: int, dtype: torch.dtype) -> int:
    """float32 words that hold `numel` values of `dtype`."""
    return -(-numel * dtype.itemsize // 4)


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

    @staticmethod
    def dtype(name: str) -> torch.dtype:
        """The dtype field `name` is stored in."""
        return STORED_DTYPES.get(name, torch.float32)

    @property
    def numel(self) -> int:
        """float32 words of the flat state (what the paged cache allocates)."""
        return sum(_words(math.prod(s), self.dtype(k)) for k, s in self.shapes().items())

    @property
    def nbytes(self) -> int:
        return 4 * self.numel

    def zeros(self, device: torch.device | str = "cpu") -> TemporalState:
        """A first frame's state, each field in its stored dtype."""
        return TemporalState(**{k: torch.zeros(s, dtype=self.dtype(k), device=device) for k, s in self.shapes().items()})

    def unflatten(self, flat: torch.Tensor) -> TemporalState:
        """Views into flat [numel] float32, each field in its stored dtype (bf16 fields are a
        reinterpretation of their words, not a conversion)."""
        if flat.dim() != 1 or flat.numel() != self.numel or flat.dtype != torch.float32:
            raise ValueError(f"a flat state is [{self.numel}] float32, got {tuple(flat.shape)} {flat.dtype}")
        parts, at = {}, 0
        for name, shape in self.shapes().items():
            n, dt = math.prod(shape), self.dtype(name)
            words = _words(n, dt)
            part = flat[at:at + words]
            if dt != torch.float32:
                part = part.view(dt)[:n]
            parts[name] = part.view(shape)
            at += words
        return TemporalState(**parts)

    def flatten(self, state: TemporalState) -> torch.Tensor:
        """One new [numel] float32 vector: each field rounded to its stored dtype (to nearest)."""
        parts = []
        for f in dataclasses.fields(state):
            dt = self.dtype(f.name)
            x = getattr(state, f.name).reshape(-1).to(dt)
            if dt != torch.float32:
                pad = _words(x.numel(), dt) * 4 // dt.itemsize - x.numel()
                if pad:
                    x = torch.cat([x, x.new_zeros(pad)])
                x = x.view(torch.float32)
            parts.append(x)
        return torch.cat(parts)
