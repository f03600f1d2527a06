"""Camera paths: orbit, dolly, strafe, handheld shake, hard cuts, and a static camera, as closed-form functions of
time; view and projection matrices in OpenGL's conventions.

Conventions: right-handed world, y up; the camera looks down its -z axis; NDC x right, y up, in
[-1, 1]; pixel (column j, row i) has its centre at (j, i), rows going down. A cut restarts the path
with new parameters from a seeded generator; `is_cut(frame)` says which frames follow a cut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .mathutil import normalize

CAMERA_KINDS = ("orbit", "dolly", "strafe", "handheld", "cuts", "static")


@dataclass(frozen=True)
class CameraPath:
    kind: str = "orbit"
    seed: int = 0
    fov_y_deg: float = 55.0
    near: float = 0.1
    far: float = 1000.0
    extent: float = 10.0  # the scene's radius, so paths frame it
    cut_every: int = 24  # frames between cuts, for kind "cuts"

    def __post_init__(self):
        if self.kind not in CAMERA_KINDS:
            raise ValueError(f"unknown camera kind {self.kind!r}; known: {', '.join(CAMERA_KINDS)}")

    def _segment(self, frame: int) -> tuple[str, int, int]:
        """(path kind, segment seed, first frame of the segment)."""
        if self.kind != "cuts":
            return self.kind, self.seed, 0
        seg = frame // self.cut_every
        kinds = ("orbit", "dolly", "strafe", "handheld")
        return kinds[(self.seed + seg * 7) % 4], self.seed * 1009 + seg, seg * self.cut_every

    def is_cut(self, frame: int) -> bool:
        return self.kind == "cuts" and frame > 0 and frame % self.cut_every == 0

    def pose(self, frame: int, fps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Camera-to-world rotation [3, 3] (columns right, up, back) and eye position [3]."""
        kind, seed, first = self._segment(frame)
        g = torch.Generator().manual_seed(seed)
        r = torch.rand(8, generator=g).tolist()
        t = (frame - first) / fps if self.kind == "cuts" else frame / fps
        e = self.extent
        target = torch.tensor([0.0, 0.8, 0.0])
        if kind == "static":
            theta = 2 * math.pi * r[2]
            eye = torch.tensor([e * 1.1 * math.cos(theta), 2.0 + 3.0 * r[1], e * 1.1 * math.sin(theta)])
        elif kind in ("orbit", "handheld"):
            radius, height = e * (0.9 + 0.5 * r[0]), 2.0 + 3.0 * r[1]
            theta = 2 * math.pi * r[2] + (0.15 + 0.2 * r[3]) * t * (1 if r[4] < 0.5 else -1)
            eye = torch.tensor([radius * math.cos(theta), height, radius * math.sin(theta)])
        elif kind == "dolly":
            theta = 2 * math.pi * r[2]
            start = torch.tensor([e * 1.3 * math.cos(theta), 1.5 + 2.0 * r[1], e * 1.3 * math.sin(theta)])
            direction = normalize(target - start)
            eye = start + direction * (1.0 + 1.5 * r[3]) * t
            target = eye + direction
        else:  # strafe
            theta = 2 * math.pi * r[2]
            start = torch.tensor([e * 1.2 * math.cos(theta), 1.5 + 2.0 * r[1], e * 1.2 * math.sin(theta)])
            forward = normalize(target - start)
            right = normalize(torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0])))
            eye = start + right * (1.5 + 2.0 * r[3]) * t * (1 if r[4] < 0.5 else -1)
            target = eye + forward
        back = normalize(eye - target)
        right = normalize(torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]), back))
        up = torch.linalg.cross(back, right)
        rot = torch.stack([right, up, back], -1)
        if kind == "handheld":  # small rotational shake: sums of incommensurate sines
            yaw = 0.012 * (math.sin(7.1 * t + 10 * r[5]) + 0.6 * math.sin(13.7 * t + r[6]))
            pitch = 0.010 * (math.sin(5.3 * t + 10 * r[6]) + 0.5 * math.sin(17.9 * t + r[7]))
            cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
            shake = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ torch.tensor([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
            rot = rot @ shake
        return rot, eye

    def view_matrix(self, frame: int, fps: float) -> torch.Tensor:
        rot, eye = self.pose(frame, fps)
        v = torch.eye(4)
        v[:3, :3] = rot.T
        v[:3, 3] = -rot.T @ eye
        return v

    def projection_matrix(self, width: int, height: int) -> torch.Tensor:
        f = 1.0 / math.tan(math.radians(self.fov_y_deg) / 2)
        n, fa = self.near, self.far
        p = torch.zeros(4, 4)
        p[0, 0] = f * height / width
        p[1, 1] = f
        p[2, 2] = (fa + n) / (n - fa)
        p[2, 3] = 2 * fa * n / (n - fa)
        p[3, 2] = -1.0
        return p
