"""`streamstyle render`: render a sequence from a seed and write it as a capture."""

from __future__ import annotations

from pathlib import Path

import torch

from ...interop.layout import reference_layout
from ..capture import CaptureWriter, FrameMeta
from .camera import CameraPath
from .gbuffers import to_planes
from .oracles import STYLES, style_names
from .prompts import PHRASINGS
from .render import Renderer
from .scene import Scene

EXTRAS = {"world_pos": ("float32", 3), "surface_pos": ("float16", 3), "sun": ("float16", 1)}


def to_rgb8(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(0, 1) * 255).to(torch.uint8)


def render_capture(seed: int, frames: int, width: int, height: int, out: str | Path, styles: str = "all",
                   fps: float = 30.0, camera: str = "orbit", device: str = "cpu", objects: int | None = None,
                   chunk_frames: int | None = None, progress: bool = True) -> Path:
    """Render `frames` frames of scene `seed` and write them, with the chosen style targets, to a
    new capture folder `out`. Returns the folder."""
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    names = style_names(styles) if styles not in ("", "none") else []
    scene = Scene.generate(seed, objects=objects)
    path = CameraPath(camera, seed=seed, extent=scene.extent)
    renderer = Renderer(scene, path, width, height, fps=fps, device=device)
    layout = reference_layout(width, height, depth_range=(path.near, path.far))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=frames, unit="frame", desc=f"render seed {seed}", dynamic_ncols=True)
    engine = {"name": "streamstyle-reference-engine", "seed": seed, "objects": scene.count, "camera_path": camera}
    cam = {"fov_y_deg": path.fov_y_deg, "near": path.near, "far": path.far}
    with CaptureWriter(out, width, height, fps, layout, extras=EXTRAS, styles={n: list(PHRASINGS[n]) for n in names},
                       engine=engine, camera=cam, chunk_frames=chunk_frames) as writer:
        for i in range(frames):
            f = renderer.render(i)
            targets = {n: to_rgb8(STYLES[n](f)) for n in names}
            extras = {"world_pos": f.world_pos.float(), "surface_pos": f.surface_pos.half(), "sun": f.sun.half()}
            writer.append(to_planes(f, layout), targets=targets, extras=extras,
                          meta=FrameMeta(time=f.time, cut=f.cut, view=f.view, proj=f.proj))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return Path(out)
