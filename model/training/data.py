"""Training clips: consecutive frames of one scene in one style with one prompt phrasing.

`ReferenceClips` renders them on the fly with the reference engine (on the training device), from
the chosen split's seeds and phrasings; clip i is a pure function of (base seed, i), so a resumed
run sees the data it would have seen. `CaptureClips` reads clips from capture folders (a studio's
own recordings or `streamstyle render` output) with the prompts each capture lists.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ...engine_plugins.capture import CaptureReader
from ...engine_plugins.reference_engine import CameraPath, Renderer, Scene
from ...engine_plugins.reference_engine.gbuffers import to_planes
from ...engine_plugins.reference_engine.oracles import STYLES, style_names
from ...engine_plugins.reference_engine.prompts import split
from ..layout import GBufferLayout, reference_layout

CAMERAS = ("orbit", "dolly", "strafe", "handheld")


@dataclass
class Clip:
    style: str
    prompt: str
    layout: GBufferLayout
    width: int
    height: int
    planes: list[dict[str, torch.Tensor]]  # per frame {channel: [H, W, C]} in engine formats
    targets: list[torch.Tensor]  # per frame [H, W, 3] float in [0, 1]
    cut: list[bool]


class ReferenceClips:
    def __init__(self, width: int, height: int, frames: int, styles: str = "all", split_name: str = "train",
                 device: str | torch.device = "cpu", seed: int = 0, fps: float = 15.0):
        self.width, self.height, self.frames, self.fps = width, height, frames, fps
        self.styles = style_names(styles)
        self.split = split(split_name)
        self.device = torch.device(device)
        self.seed = seed
        self.layout = reference_layout(width, height)

    def clip(self, index: int) -> Clip:
        rng = random.Random(self.seed * 1_000_003 + index)
        scene_seed = rng.randrange(self.split.seeds.start, self.split.seeds.stop)
        style = rng.choice(self.styles)
        prompt = rng.choice(self.split.phrasings[style])
        camera = rng.choice(CAMERAS)
        start = rng.randrange(0, 120)
        scene = Scene.generate(scene_seed)
        r = Renderer(scene, CameraPath(camera, seed=scene_seed, extent=scene.extent), self.width, self.height,
                     fps=self.fps, device=self.device)
        planes, targets, cuts = [], [], []
        for k, f in enumerate(r.render_many(list(range(start, start + self.frames)))):  # one pass per clip
            planes.append(to_planes(f, self.layout))
            targets.append(STYLES[style](f))
            cuts.append(k == 0 or f.cut)
        return Clip(style, prompt, self.layout, self.width, self.height, planes, targets, cuts)


class CaptureClips:
    """Clips cut from capture folders that hold style targets. Each capture's manifest lists its
    styles and their phrasings; a clip takes `frames` consecutive frames of one capture."""

    def __init__(self, folders: Sequence[str | Path], frames: int, seed: int = 0):
        self.readers = [CaptureReader(f) for f in folders]
        self.frames, self.seed = frames, seed
        usable = [r for r in self.readers if r.styles and len(r) >= frames]
        if not usable:
            raise ValueError(f"no capture among {', '.join(map(str, folders))} has style targets and "
                             f"at least {frames} frames")
        self.readers = usable

    def clip(self, index: int) -> Clip:
        rng = random.Random(self.seed * 1_000_003 + index)
        reader = rng.choice(self.readers)
        style = rng.choice(sorted(reader.styles))
        phrasings = reader.styles[style] or [style]
        prompt = rng.choice(phrasings)
        start = rng.randrange(0, len(reader) - self.frames + 1)
        frames = [reader[start + k] for k in range(self.frames)]
        return Clip(style, prompt, reader.layout, reader.width, reader.height,
                    [f.planes for f in frames], [f.targets[style].float() / 255 for f in frames],
                    [k == 0 or f.meta.cut for k, f in enumerate(frames)])


class MixedClips:
    """Draws from several sources by weight (e.g. the reference engine and a studio's captures)."""

    def __init__(self, sources: Sequence[tuple[object, float]], seed: int = 0):
        self.sources = [s for s, w in sources if w > 0]
        self.weights = [w for _, w in sources if w > 0]
        self.seed = seed

    def clip(self, index: int) -> Clip:
        rng = random.Random(self.seed * 7_919 + index)
        return rng.choices(self.sources, weights=self.weights)[0].clip(index)
