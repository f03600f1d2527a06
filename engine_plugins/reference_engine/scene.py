"""Procedural scenes from a seed: a ground, 5 to 40 primitives with procedural materials, a sun,
a sky. Every pose is a closed-form function of time, so the renderer can evaluate the previous
frame's pose exactly (that is what makes the motion vectors exact).

What must hold: the same seed gives the same scene on every device; primitives stand on or above
the ground and inside a disc of radius `extent` around the origin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .mathutil import normalize, rotation

SPHERE, BOX, CYLINDER, CAPSULE = 0, 1, 2, 3
SHAPE_NAMES = ("sphere", "box", "cylinder", "capsule")
SOLID, CHECKER, STRIPES, NOISE = 0, 1, 2, 3


@dataclass(frozen=True)
class Scene:
    seed: int
    shape: torch.Tensor  # [P] int64 shape kind
    size: torch.Tensor  # [P, 3] sphere: (r, -, -); box: half extents; cylinder/capsule: (r, half height, -)
    base_pos: torch.Tensor  # [P, 3]
    base_rot: torch.Tensor  # [P, 3, 3]
    bob_axis: torch.Tensor  # [P, 3] unit; position oscillates along it
    bob_amp: torch.Tensor  # [P] metres
    bob_freq: torch.Tensor  # [P] radians per second
    bob_phase: torch.Tensor  # [P]
    spin_axis: torch.Tensor  # [P, 3] unit
    spin_rate: torch.Tensor  # [P] radians per second
    albedo: torch.Tensor  # [P, 3]
    albedo2: torch.Tensor  # [P, 3] second pattern colour
    pattern: torch.Tensor  # [P] int64
    pattern_scale: torch.Tensor  # [P]
    roughness: torch.Tensor  # [P]
    metallic: torch.Tensor  # [P]
    ground_albedo: torch.Tensor  # [2, 3] checker colours
    ground_scale: float
    sun_dir: torch.Tensor  # [3] unit, towards the sun
    sun_color: torch.Tensor  # [3] linear HDR
    sky_zenith: torch.Tensor  # [3]
    sky_horizon: torch.Tensor  # [3]
    extent: float

    @property
    def count(self) -> int:
        return int(self.shape.numel())

    @staticmethod
    def generate(seed: int, objects: int | None = None, moving: float = 0.5) -> "Scene":
        """A scene from `seed`; `objects` defaults to a seeded count in 5..40; `moving` is the share
        of primitives that move."""
        g = torch.Generator().manual_seed(int(seed))

        def rand(*shape):
            return torch.rand(*shape, generator=g)

        n = int(torch.randint(5, 41, (1,), generator=g)) if objects is None else int(objects)
        if not 1 <= n <= 256:
            raise ValueError(f"objects must be 1..256, got {n}")
        extent = 6.0 + 0.25 * n
        shape = torch.randint(0, 4, (n,), generator=g)
        size = torch.stack([0.3 + 0.9 * rand(n), 0.3 + 0.9 * rand(n), 0.3 + 0.9 * rand(n)], -1)
        radius = extent * torch.sqrt(rand(n))
        angle = 2 * math.pi * rand(n)
        lift = torch.where(shape == SPHERE, size[:, 0], torch.where(shape == BOX, size[:, 1], size[:, 1] + torch.where(shape == CAPSULE, size[:, 0], 0.0)))
        base_pos = torch.stack([radius * torch.cos(angle), lift + 0.6 * rand(n) * (rand(n) < 0.3), radius * torch.sin(angle)], -1)
        base_rot = rotation(normalize(torch.randn(n, 3, generator=g)), 2 * math.pi * rand(n))
        moves = rand(n) < moving
        bob_axis = normalize(torch.randn(n, 3, generator=g) * torch.tensor([1.0, 0.3, 1.0]))
        bob_amp = moves * (0.3 + 1.2 * rand(n))
        bob_freq = 0.5 + 2.0 * rand(n)
        bob_phase = 2 * math.pi * rand(n)
        spin_axis = normalize(torch.randn(n, 3, generator=g))
        spin_rate = moves * (rand(n) - 0.5) * 2.0
        hue = rand(n)
        albedo = _hsv(hue, 0.3 + 0.6 * rand(n), 0.35 + 0.6 * rand(n))
        albedo2 = _hsv((hue + 0.3 + 0.4 * rand(n)) % 1.0, 0.2 + 0.6 * rand(n), 0.2 + 0.7 * rand(n))
        pattern = torch.randint(0, 4, (n,), generator=g)
        pattern_scale = 2.0 + 6.0 * rand(n)
        roughness = 0.15 + 0.8 * rand(n)
        metallic = (rand(n) < 0.25).float() * (0.6 + 0.4 * rand(n))
        elev = math.radians(20 + 50 * float(rand(1)))
        azim = 2 * math.pi * float(rand(1))
        sun_dir = torch.tensor([math.cos(elev) * math.cos(azim), math.sin(elev), math.cos(elev) * math.sin(azim)])
        warm = float(rand(1))
        sun_color = torch.tensor([3.2, 2.9 - 0.4 * warm, 2.5 - 0.8 * warm])
        ground = torch.stack([_hsv(rand(1), 0.15 + 0.3 * rand(1), 0.45 + 0.3 * rand(1))[0],
                              _hsv(rand(1), 0.1 + 0.3 * rand(1), 0.25 + 0.2 * rand(1))[0]])
        return Scene(seed=int(seed), shape=shape, size=size, base_pos=base_pos, base_rot=base_rot,
                     bob_axis=bob_axis, bob_amp=bob_amp, bob_freq=bob_freq, bob_phase=bob_phase,
                     spin_axis=spin_axis, spin_rate=spin_rate, albedo=albedo, albedo2=albedo2,
                     pattern=pattern, pattern_scale=pattern_scale, roughness=roughness, metallic=metallic,
                     ground_albedo=ground, ground_scale=0.5 + float(rand(1)), sun_dir=sun_dir,
                     sun_color=sun_color, sky_zenith=torch.tensor([0.25, 0.45, 0.95]) * (0.8 + 0.4 * float(rand(1))),
                     sky_horizon=torch.tensor([0.85, 0.9, 1.0]), extent=extent)

    def to(self, device: torch.device | str) -> "Scene":
        fields = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return Scene(**fields)

    def poses(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Object-to-world rotation [P, 3, 3] and translation [P, 3] at time t (seconds)."""
        tt = torch.as_tensor(t, dtype=torch.float32, device=self.base_pos.device)
        pos = self.base_pos + self.bob_axis * (self.bob_amp * torch.sin(self.bob_freq * tt + self.bob_phase)).unsqueeze(-1)
        pos = torch.stack([pos[:, 0], torch.maximum(pos[:, 1], self.base_pos[:, 1] * 0.5), pos[:, 2]], -1)
        rot = rotation(self.spin_axis, self.spin_rate * tt) @ self.base_rot
        return rot, pos


def _hsv(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """HSV in [0, 1] -> linear RGB [..., 3]."""
    h = h * 6.0
    k = torch.stack([(5 + h) % 6, (3 + h) % 6, (1 + h) % 6], -1)
    rgb = v.unsqueeze(-1) - (v * s).unsqueeze(-1) * torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return rgb ** 2.2
