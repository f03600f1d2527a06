"""Model configuration: one frozen dataclass, passed whole, and named presets.

What must hold: `patch` (the token stride, in pixels) is a multiple of `latent_stride` (pixels per
latent pixel), `width` is a multiple of `heads`, and every name in `cond_channels` and
`guide_channels` is a semantic G-buffer channel (see `layout.SEMANTIC_CHANNELS`). `validate()` checks
all of it and every constructor path calls it.

The latent is the stylized frame itself at 1/`latent_stride` resolution, RGB in [-1, 1]. It needs no
learned encoder, it warps like an image with the engine's motion vectors, and the decoder upsamples
it to full resolution guided by the full-resolution G-buffers (DESIGN.md: no heavy autoencoder).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from .errors import ConfigError

CONFIG_VERSION = 2
# Version 1 (before the full-resolution refiner) still reads: its missing fields take their
# defaults, so its DiT weights can start a version-2 run (`load_weights(..., partial=True)`).
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "custom"
    width: int = 384  # transformer width D
    depth: int = 12  # number of Hybrid DiT blocks
    heads: int = 12  # linear-attention and cross-attention heads
    mlp_ratio: float = 2.0  # Mix-FFN hidden width over D
    patch: int = 16  # token stride: pixels per token along each axis
    latent_stride: int = 4  # pixels per latent pixel along each axis
    latent_channels: int = 3
    cond_channels: tuple[str, ...] = ("color", "depth", "normals", "albedo", "roughness", "metallic")
    guide_channels: tuple[str, ...] = ("color", "depth", "normals", "albedo")
    decoder_width: int = 16  # version 1's guided decoder (kept so its configs read; unused)
    refiner_width: int = 32  # channels of the full-resolution refiner's passes
    refiner_depth: int = 0  # residual 3x3 passes between the refiner's first and last (0: two passes)
    id_features: int = 3  # object-id embedding width fed to the refiner (0: ids unused)
    # Rank of the refiner's per-style object colours: a second id table (256 x K) times a K x 3
    # matrix made from the prompt, added to the upsampled latent where ids are given (thermal's
    # heat and neon's hue are per-object looks; 0: none, as models before stage 9)
    id_colours: int = 0
    surface_features: int = 4  # Fourier features of the surface position (sin and cos of each)
    text_dim: int = 384  # all-MiniLM-L6-v2 hidden size
    max_prompt_tokens: int = 32  # per prompt, after tokenization
    max_prompts: int = 4  # parts of one weighted blend
    state_decay: float = 0.9  # initial per-head decay of the linear-attention running sums
    attn_eps: float = 1e-4
    # A pixel whose depth differs from the warped previous depth by more than this fraction of
    # its own depth is disoccluded: its history is not trusted.
    disocclusion_tolerance: float = 0.05
    # The sampler's fresh noise on tokens that keep their history, as a share of the standard
    # normal draw (tokens without history always start from full noise): 1 re-noises the warped
    # latent as training always did; 0 starts it deterministically, (1 - strength) * warped, so a
    # frame's output moves only with its inputs (docs/model.md, benchmarks/NOTES.md v0.14).
    history_noise: float = 1.0

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def hidden(self) -> int:
        """Mix-FFN hidden width (rounded to a multiple of 8 for tensor cores)."""
        return max(8, int(round(self.width * self.mlp_ratio / 8)) * 8)

    @property
    def latent_patch(self) -> int:
        """Latent pixels per token along each axis."""
        return self.patch // self.latent_stride

    @property
    def context_tokens(self) -> int:
        """Fixed length of the prompt context: every blend part padded to `max_prompt_tokens`."""
        return self.max_prompts * self.max_prompt_tokens

    def validate(self) -> "ModelConfig":
        from .layout import SEMANTIC_CHANNELS

        problems = []
        for field_name in ("width", "depth", "heads", "patch", "latent_stride", "latent_channels",
                           "decoder_width", "refiner_width", "text_dim", "max_prompt_tokens", "max_prompts"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{field_name} must be a positive integer, got {value!r}")
        if problems:
            raise ConfigError(f"model config {self.name!r}: " + "; ".join(problems))
        for field_name in ("id_features", "id_colours", "surface_features", "refiner_depth"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"{field_name} must be a non-negative integer, got {value!r}")
        if self.width % self.heads:
            problems.append(f"width {self.width} is not a multiple of heads {self.heads}")
        if self.patch % self.latent_stride:
            problems.append(f"patch {self.patch} is not a multiple of latent_stride {self.latent_stride}")
        if not self.mlp_ratio > 0:
            problems.append(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if not 0.0 < self.state_decay < 1.0:
            problems.append(f"state_decay must lie in (0, 1), got {self.state_decay}")
        if not self.disocclusion_tolerance > 0:
            problems.append("disocclusion_tolerance must be positive")
        if not (isinstance(self.history_noise, (int, float)) and 0.0 <= self.history_noise <= 1.0):
            problems.append(f"history_noise must lie in [0, 1], got {self.history_noise!r}")
        for group in ("cond_channels", "guide_channels"):
            names = getattr(self, group)
            if len(set(names)) != len(names):
                problems.append(f"{group} names a channel twice: {names}")
            for name in names:
                if name not in SEMANTIC_CHANNELS:
                    problems.append(f"{group} names unknown channel {name!r} "
                                    f"(known: {', '.join(SEMANTIC_CHANNELS)})")
                elif name in ("motion", "ids"):
                    problems.append(f"{group} cannot use {name!r}: it is not a normalised image")
        if problems:
            raise ConfigError(f"model config {self.name!r}: " + "; ".join(problems))
        return self

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["config_version"] = CONFIG_VERSION
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"model config is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("model config must be a JSON object")
        version = data.pop("config_version", None)
        if version not in READABLE_VERSIONS:
            raise ConfigError(f"model config version {version!r} is not supported "
                              f"(this build reads version {CONFIG_VERSION})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"model config has unknown fields: {', '.join(unknown)}")
        for key in ("cond_channels", "guide_channels"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data).validate()


def _tiny() -> ModelConfig:
    return ModelConfig(name="tiny", width=32, depth=2, heads=2, mlp_ratio=2.0, patch=8,
                       latent_stride=4, decoder_width=8, refiner_width=8, id_features=2, surface_features=2,
                       max_prompt_tokens=16, max_prompts=4)


def _default() -> ModelConfig:
    # 24.0 M parameters: 48 MB in bf16, within the 50 MB the shipped weights may take. The
    # deterministic start (history_noise 0): the shipped model's since v0.15 (benchmarks/NOTES.md),
    # better held out on fidelity and steadiness both than re-noising the history.
    return ModelConfig(name="default", width=384, depth=12, heads=12, mlp_ratio=1.5, patch=16,
                       latent_stride=4, decoder_width=16, history_noise=0.0)


def _large() -> ModelConfig:
    # SANA-600M's width and depth (1152 x 28, 2.5x Mix-FFN) with 32-pixel tokens.
    return ModelConfig(name="large", width=1152, depth=28, heads=36, mlp_ratio=2.5, patch=32,
                       latent_stride=4, decoder_width=32)


PRESETS = {"tiny": _tiny, "default": _default, "large": _large}


def preset(name: str) -> ModelConfig:
    """The named preset's config; an unknown name raises `ConfigError` listing the known ones."""
    try:
        factory = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
    return factory().validate()
