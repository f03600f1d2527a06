"""Captures from Panda3D: a real engine's G-buffers of a real scene, in the capture format
(docs/capture-format.md), with the style oracles applied to those G-buffers as targets.

The engine side (engine_plugins/panda3d) stays torch-free; this tool sits on top and converts each
read-back frame into what the capture writer and the oracles take. The oracles see the engine's
buffers plus what its G-buffer pass renders only for them: the surface point in its object's frame
and the sun term (`extra` target). World positions are rebuilt from depth and the camera.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from ..engine_plugins.capture import CaptureWriter, FrameMeta
from ..engine_plugins.panda3d.contract import panda3d_layout
from ..engine_plugins.reference_engine.oracles import STYLES, style_names
from ..engine_plugins.reference_engine.prompts import PHRASINGS
from ..engine_plugins.reference_engine.record import EXTRAS, to_rgb8
from ..engine_plugins.reference_engine.render import RenderedFrame


def world_positions(depth: np.ndarray, view: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """[H, W] linear view depth -> [H, W, 3] world points (pixel centres, rows top-down)."""
    h, w = depth.shape
    x = (np.arange(w) + 0.5) / w * 2 - 1
    y = 1 - (np.arange(h) + 0.5) / h * 2
    ndc = np.stack(np.broadcast_arrays(x[None, :], y[:, None], np.ones((h, w)), np.ones((h, w))), -1)
    cam = ndc @ np.linalg.inv(proj.astype(np.float64)).T
    cam = cam[..., :3] / cam[..., 3:4]
    cam = cam / -cam[..., 2:3] * depth[..., None]  # scaled so that -z is the depth
    world = np.concatenate([cam, np.ones((h, w, 1))], -1) @ np.linalg.inv(view.astype(np.float64)).T
    return world[..., :3].astype(np.float32)


def to_rendered(frame, index: int, fps: float, prev_view: np.ndarray | None) -> RenderedFrame:
    """A Panda3D `GBufferFrame` (read with extras=True) as the reference engine's frame record."""
    p = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in frame.planes.items()}
    hdr = p["color"][..., :3].clamp_min(0)
    extra = torch.from_numpy(np.ascontiguousarray(frame.extra))
    depth = p["geometry"][..., 3:4]
    return RenderedFrame(
        index=index, time=index / fps, cut=index == 0, color_hdr=hdr, color=(hdr / (1 + hdr)) ** (1 / 2.2),
        depth=depth, normals=p["geometry"][..., :3], albedo=p["surface"][..., :3], roughness=p["surface"][..., 3:4],
        metallic=p["motion"][..., 2:3], motion=p["motion"][..., :2],
        ids=torch.from_numpy(frame.ids.astype(np.int32))[..., None],
        world_pos=torch.from_numpy(world_positions(frame.planes["geometry"][..., 3], frame.view, frame.proj)),
        surface_pos=extra[..., :3], sun=extra[..., 3:4], view=torch.from_numpy(frame.view),
        proj=torch.from_numpy(frame.proj), prev_view=torch.from_numpy(prev_view if prev_view is not None else frame.view))


def capture_planes(frame) -> dict[str, torch.Tensor]:
    """The frame's planes as the capture writer stores them for `panda3d_layout` (float16 planes,
    int32 ids; channels sharing a plane share the tensor)."""
    half = {k: torch.from_numpy(v.astype(np.float16)) for k, v in frame.planes.items()}
    ids = torch.from_numpy(frame.ids.astype(np.int32))[..., None]
    return {"color": half["color"], "normals": half["geometry"], "depth": half["geometry"], "albedo": half["surface"],
            "roughness": half["surface"], "motion": half["motion"], "metallic": half["motion"], "ids": ids}


def render_panda3d(base, scene: str, frames: int, size: tuple[int, int], fps: float = 30.0, start: int = 0):
    """Render `frames` frames of `scene` (its flythrough and moving objects from frame `start`) with
    `base` and yield `(GBufferFrame, RenderedFrame, engine, camera)` per frame: the engine's read-back
    (extras included) and the same frame as the oracles take it. The scene is removed afterwards."""
    from ..engine_plugins.panda3d.gbuffer import GBufferPass
    from ..engine_plugins.panda3d.scenes import build_scene

    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    w, h = size
    world = build_scene(base, scene)
    gpass = GBufferPass(base, w, h, extras=True)
    engine = {"name": "panda3d", "scene": scene, "renderer": base.win.getGsg().getDriverRenderer()}
    cam = {"fov_y_deg": float(base.camLens.getFov()[1]), "near": gpass.depth_range[0], "far": gpass.depth_range[1]}
    try:
        prev_view = None
        for i in range(frames):
            world.pose(base, start + i, fps)
            gpass.begin_frame(cut=i == 0)
            base.graphicsEngine.renderFrame()
            f = gpass.read()
            yield f, to_rendered(f, i, fps, prev_view), engine, cam
            prev_view = f.view
    finally:
        gpass.destroy()
        world.root.removeNode()


def record_panda3d_capture(out: str | Path, scene: str = "helmet", frames: int = 16, size: tuple[int, int] = (256, 192),
                           styles: str = "all", fps: float = 30.0, base=None) -> Path:
    """Render `frames` frames of `scene` (flythrough, moving objects) in Panda3D and write a capture
    with the chosen style targets. `base`: an existing headless ShowBase (one per process)."""
    from ..engine_plugins.panda3d.headless import headless_base

    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    names = style_names(styles) if styles not in ("", "none") else []
    w, h = size
    own = base is None
    base = base or headless_base(w, h)
    try:
        with ExitStack() as stack:
            writer = None
            for f, rf, engine, cam in render_panda3d(base, scene, frames, size, fps):
                if writer is None:  # the engine and camera entries are known once the scene is built
                    layout = panda3d_layout(w, h, (cam["near"], cam["far"]))
                    writer = stack.enter_context(CaptureWriter(out, w, h, fps, layout, extras=EXTRAS,
                                                               styles={n: list(PHRASINGS[n]) for n in names},
                                                               engine=engine, camera=cam))
                targets = {n: to_rgb8(STYLES[n](rf)) for n in names}
                extras = {"world_pos": rf.world_pos.float(), "surface_pos": rf.surface_pos.half(), "sun": rf.sun.half()}
                writer.append(capture_planes(f), targets=targets, extras=extras,
                              meta=FrameMeta(time=rf.time, cut=rf.cut, view=rf.view, proj=rf.proj))
    finally:
        if own:
            base.destroy()
    return Path(out)
