"""The real-scene evaluation split's frame source: Panda3D renders each real scene
(engine_plugins/panda3d/realset.py) along its flythrough, the moving objects moving, and hands the
frames to the held-out evaluation's own `evaluate` (model/training/evaluate.py) as another source of
sequences. The style oracles are applied to the engine's real G-buffers by `evaluate` itself, as on
the held-out set; the frames are rendered live and never written where training could read them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..engine_plugins.panda3d.realset import real_scenes
from ..model.training.evaluate import EvalConfig, Sequence
from .panda3d_capture import render_panda3d

# Each scene's session noise seed and the flythrough frame its path starts at (not the demo's 0).
REAL_SEED_BASE = 2_000_000
REAL_START_FRAME = 30


def _to(frame, device):
    """A RenderedFrame's tensors moved to `device`."""
    from dataclasses import fields

    import torch

    return type(frame)(**{f.name: (getattr(frame, f.name).to(device) if isinstance(getattr(frame, f.name), torch.Tensor)
                                   else getattr(frame, f.name)) for f in fields(frame)})


class RealScenes:
    """A `SequenceSource` over `scenes` (real-split names), one Panda3D headless base for all of
    them (a ShowBase is one per process: pass `base` if the caller has one)."""

    def __init__(self, scenes: str = "all", base=None, egl_device: int | None = None):
        self.scenes = real_scenes(scenes)
        self.base, self.egl_device = base, egl_device

    def __len__(self) -> int:
        return len(self.scenes)

    def __call__(self, cfg: EvalConfig, device) -> Iterator[Sequence]:
        from ..engine_plugins.panda3d.headless import headless_base

        own = self.base is None
        base = self.base or headless_base(*cfg.size, egl_device=self.egl_device)
        try:
            for k, scene in enumerate(self.scenes):
                frames = [_to(rf, device) for _, rf, _, _ in
                          render_panda3d(base, scene, cfg.frames, cfg.size, cfg.fps, start=REAL_START_FRAME)]
                yield Sequence(scene, REAL_SEED_BASE + k, frames)
        finally:
            if own:
                base.destroy()


def contact_sheet(rows: dict[str, dict[str, "object"]], path, tile: tuple[int, int] = (128, 96)) -> int:
    """Write a PNG grid: one row per sequence, one column per entry (e.g. 'engine', then each
    style's output), each an [H, W, 3] tensor in [0, 1], resized to `tile`, labelled. Returns bytes."""
    import numpy as np
    from PIL import Image, ImageDraw

    cols = list(dict.fromkeys(c for r in rows.values() for c in r))
    tw, th = tile
    label = 14
    sheet = Image.new("RGB", (tw * len(cols), label + (th + label) * len(rows)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for j, c in enumerate(cols):
        draw.text((j * tw + 3, 1), c, fill=(230, 230, 230))
    for i, (name, row) in enumerate(rows.items()):
        y = label + i * (th + label)
        draw.text((3, y + th + 1), name, fill=(230, 230, 230))
        for j, c in enumerate(cols):
            if c in row:
                img = (row[c].detach().float().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
                sheet.paste(Image.fromarray(img).resize(tile, Image.LANCZOS), (j * tw, y))
    # A 256-colour palette keeps a sheet of a dozen-odd stills small enough for the docs.
    sheet.quantize(256, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    return Path(path).stat().st_size
