"""The Panda3D integration, end to end on the CPU: a real engine (Panda3D on Mesa's llvmpipe,
headless EGL) renders a real scene (the DamagedHelmet glTF), streams its G-buffers to the real
service in a child process, and composites the answer; the game loop survives a service restart
and a service that never answers; motion vectors reproduce the next frame; captures round-trip."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zmq

pytest.importorskip("panda3d.core", reason="panda3d is not installed (pip install -e '.[panda3d]')")
pytest.importorskip("gltf", reason="panda3d-gltf is not installed (pip install -e '.[panda3d]')")

from streamstyle.engine_plugins.panda3d.contract import panda3d_layout  # noqa: E402
from streamstyle.engine_plugins.panda3d.demo import screenshot  # noqa: E402
from streamstyle.engine_plugins.panda3d.gbuffer import GBufferPass  # noqa: E402
from streamstyle.engine_plugins.panda3d.headless import headless_base  # noqa: E402
from streamstyle.engine_plugins.panda3d.plugin import StreamStyle, View  # noqa: E402
from streamstyle.engine_plugins.panda3d.scenes import build_scene, find_asset  # noqa: E402

from .conftest import perturb  # noqa: E402
from .service_process import ServiceProcess  # noqa: E402

W, H = 64, 48
PLUGIN = Path(__file__).resolve().parents[1] / "engine_plugins" / "panda3d"


@pytest.fixture(scope="module")
def base():
    if find_asset("helmet") is None:
        pytest.skip("the DamagedHelmet asset is not beside the repository (../shared/assets)")
    b = headless_base(W, H)
    yield b
    b.destroy()


@pytest.fixture
def scene(base):
    world = build_scene(base, "helmet")
    yield world
    world.root.removeNode()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from streamstyle.model.config import preset
    from streamstyle.model.network import StreamStyleModel
    from streamstyle.model.weights import save_weights

    g = torch.Generator().manual_seed(99)
    return save_weights(perturb(StreamStyleModel(preset("tiny")), g), tmp_path_factory.mktemp("w") / "tiny")


def Service(address: str, weights, workdir: Path):
    """`streamstyle serve` in a child process at a fixed address (so it can be restarted there)."""
    return ServiceProcess(workdir, address, "--weights", str(weights), "--no-prompts", timeout_s=120)


def run_frames(base, world, seconds: float = 0.0, until=None, limit_s: float = 90.0, move: bool = True):
    """Step the game loop; returns each frame's wall time (s). Stops after `seconds`, or once
    `until()` holds (failing past `limit_s`)."""
    times, start, i = [], time.monotonic(), 0
    while True:
        if move:
            world.pose(base, i)
        t = time.perf_counter()
        base.taskMgr.step()
        times.append(time.perf_counter() - t)
        i += 1
        elapsed = time.monotonic() - start
        if until is not None:
            if until():
                return times
            assert elapsed < limit_s, "timed out"
        elif elapsed >= seconds:
            return times
        time.sleep(0.01)


def test_plugin_sources_import_no_torch_service_or_model():
    """Only contract.py takes the layout from the model side (the line to repoint to interop)."""
    for path in PLUGIN.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.split(".")[0] == "torch", f"{path.name} imports torch"
                if "service" in name.split(".") or "model" in name.split("."):
                    assert path.name == "contract.py" and name.endswith("model.layout"), f"{path.name}: {name}"


def test_streams_real_scene_and_composites_the_answer(base, scene, weights, tmp_path):
    svc = Service(f"ipc://{tmp_path}/svc.sock", weights, tmp_path)
    style = StreamStyle(base, f"ipc://{tmp_path}/svc.sock", prompt=None, steps=1)
    sent = []
    submit = style.link.submit

    def checked(slot, **kw):  # what goes into the ring must be finite, in every channel
        views = style.link._views[slot]
        sent.append(all(np.isfinite(np.asarray(v)).all() for k, v in views.items() if k != "ids"))
        submit(slot, **kw)

    style.link.submit = checked
    try:
        layout = panda3d_layout(W, H, style.gbuffer.depth_range)
        layout.validate(required=("color", "depth", "normals", "albedo", "roughness", "metallic", "motion"),
                        width=W, height=H, slot_bytes=layout.slot_bytes(W, H))
        run_frames(base, scene, until=lambda: style.link.stats.done >= 3)
        assert style.link.stats.errors == 0, style.link.stats.last_error
        assert sent and all(sent) and style.nonfinite == 0
        # Hold the scene still, then compare what the player sees with and without the service.
        scene.pose(base, 0)
        done = style.link.stats.done
        run_frames(base, scene, until=lambda: style.link.stats.done >= done + 2, move=False)
        style.set_view(View.STYLIZED)
        base.taskMgr.step()
        assert style.showing_stylized
        stylized = screenshot(base).astype(np.int16)
        style.set_view(View.ENGINE)
        base.taskMgr.step()
        engine = screenshot(base).astype(np.int16)
        assert np.abs(stylized - engine).mean() > 2.0
        style.set_view(View.SIDE_BY_SIDE)
        base.taskMgr.step()
        side = screenshot(base)
        assert side[:H // 4].max() == 0  # letterboxed: the top quarter is black
    finally:
        style.close()
        svc.stop()


def test_survives_a_service_restart(base, scene, weights, tmp_path):
    address = f"ipc://{tmp_path}/svc.sock"
    svc = Service(address, weights, tmp_path)
    style = StreamStyle(base, address, prompt=None, steps=1, fallback_ms=300)
    try:
        run_frames(base, scene, until=lambda: style.link.stats.done >= 2)
        svc.stop()
        times = run_frames(base, scene, seconds=2.0)
        assert not style.showing_stylized  # the engine's own frame, once the last answer is stale
        assert np.median(times) < 0.1 and max(times) < 0.5  # the loop never waited on the dead service
        done = style.link.stats.done
        svc = Service(address, weights, tmp_path)
        run_frames(base, scene, until=lambda: style.link.stats.done >= done + 2, limit_s=60)
        run_frames(base, scene, seconds=0.05)
        assert style.link.client.reconnects >= 1
    finally:
        style.close()
        svc.stop()


def test_a_service_that_never_answers_costs_the_game_nothing(base, scene, tmp_path):
    address = f"ipc://{tmp_path}/mute.sock"
    ctx = zmq.Context.instance()
    mute = ctx.socket(zmq.ROUTER)  # takes every message, answers none
    mute.bind(address)
    style = StreamStyle(base, address, prompt=None)
    try:
        ref = run_frames(base, scene, seconds=0.5)
        times = run_frames(base, scene, seconds=2.5)
        assert style.shown_stylized == 0 and style.shown_engine == len(ref) + len(times)
        assert style.link.stats.submitted == 0
        assert np.median(times) < 0.1 and max(times) < 0.5
    finally:
        style.close()
        mute.close(linger=0)


def _warp_error(prev, cur, mask_ids=None):
    """Warp frame t-1's display colour to frame t by t's motion vectors (bilinear); mean and 95th
    percentile absolute error on pixels both frames see, and the share of such pixels."""
    def display(f):
        c = np.maximum(f.planes["color"][..., :3], 0)
        return (c / (1 + c)) ** (1 / 2.2)

    a, b = display(prev), display(cur)
    h, w = b.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    mv = cur.planes["motion"][..., :2]
    qx, qy = xx + mv[..., 0], yy + mv[..., 1]
    x0, y0 = np.floor(qx).astype(int), np.floor(qy).astype(int)
    inside = (x0 >= 0) & (y0 >= 0) & (x0 < w - 1) & (y0 < h - 1)
    x0c, y0c = np.clip(x0, 0, w - 2), np.clip(y0, 0, h - 2)
    fx, fy = (qx - x0c)[..., None], (qy - y0c)[..., None]
    warped = (a[y0c, x0c] * (1 - fx) * (1 - fy) + a[y0c, x0c + 1] * fx * (1 - fy)
              + a[y0c + 1, x0c] * (1 - fx) * fy + a[y0c + 1, x0c + 1] * fx * fy)
    # Seen in both: the four texels read all belong to the same object as the pixel (no occlusion
    # edge between), and the pixel is not on an object's silhouette in frame t.
    ids_prev, ids = prev.ids, cur.ids
    same = np.ones_like(inside)
    for dy in (0, 1):
        for dx in (0, 1):
            same &= ids_prev[y0c + dy, x0c + dx] == ids
    edge = np.zeros_like(inside)
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        edge |= np.roll(ids, (dy, dx), (0, 1)) != ids
    valid = inside & same & ~edge
    # Where frame t has detail (a smooth patch looks the same warped or not, and proves nothing).
    grad = np.maximum(np.abs(np.diff(b, axis=0, append=b[-1:])).max(-1), np.abs(np.diff(b, axis=1, append=b[:, -1:])).max(-1))
    valid &= grad > 0.02
    if mask_ids is not None:
        valid &= np.isin(ids, mask_ids)
    err = np.abs(warped - b).mean(-1)[valid]
    still = np.abs(a - b).mean(-1)[valid]  # the same pixels, not warped: what the check must beat
    return float(err.mean()), float(np.percentile(err, 95)), float(valid.mean()), float(still.mean()), mv[valid]


def test_motion_vectors_reproduce_the_next_frame(base, scene):
    """Bound: on textured pixels both frames see, warping frame t-1's colour by frame t's motion
    vectors (bilinear) gives a mean |error| under 0.05 and a 95th percentile under 0.2 (display RGB
    in [0, 1]; measured 0.036 / 0.14 on the helmet), under half the error of not warping, for a
    flying camera; for a moving, turning object (8 px a frame) under 0.08 / 0.3 (measured 0.065 /
    0.23, not warping 0.25); flipping the motion's sign makes it worse."""
    gpass = GBufferPass(base, 160, 120)
    try:
        def render():
            gpass.begin_frame()
            base.graphicsEngine.renderFrame()
            return gpass.read()

        # The camera flies (objects still).
        scene.pose(base, 0, fps=15.0, objects=False)
        render()
        prev = render()
        scene.pose(base, 3, fps=15.0, objects=False)
        cur = render()
        mean, p95, seen, still, mv = _warp_error(prev, cur)
        assert np.abs(mv).mean() > 0.5 and len(mv) > 200
        assert mean < 0.05 and p95 < 0.2 and mean < 0.5 * still, (mean, p95, still)
        cur.planes["motion"][..., :2] *= -1
        assert _warp_error(prev, cur)[0] > 1.5 * mean
        # An object moves (camera still, looking at it): only the mover's pixels.
        mover = scene.movers[0]
        scene.pose(base, 10, fps=15.0, camera=False)
        p = mover.getPos(base.render)
        base.camera.setPos(p.x * 1.6, p.y * 1.6, p.z + 0.6)
        base.camera.lookAt(p)
        render()
        prev = render()
        scene.pose(base, 11, fps=15.0, camera=False)
        cur = render()
        ids = np.unique(cur.ids[np.abs(cur.planes["motion"][..., :2]).sum(-1) > 0.5])
        assert len(ids) and (cur.ids == 0).any()
        mean, p95, seen, still, mv = _warp_error(prev, cur, mask_ids=ids)
        assert np.abs(mv).mean() > 0.5 and len(mv) > 200
        # It also turns under a fixed sun, so its shading moves on its surface: a looser bound.
        assert mean < 0.08 and p95 < 0.3 and mean < 0.5 * still, (mean, p95, still)
        # A still scene seen by a still camera has no motion, sky included.
        render()
        assert np.abs(render().planes["motion"][..., :2]).max() < 1e-3
    finally:
        gpass.destroy()


def test_capture_round_trip(base, tmp_path):
    from streamstyle.engine_plugins.capture import CaptureReader
    from streamstyle.tools.panda3d_capture import record_panda3d_capture

    out = record_panda3d_capture(tmp_path / "cap", "helmet", frames=3, size=(W, H), styles="cel,pencil", base=base)
    reader = CaptureReader(out)
    assert len(reader) == 3 and set(reader.styles) == {"cel", "pencil"}
    cam = reader.manifest["camera"]
    assert reader.layout.to_dict() == panda3d_layout(W, H, (cam["near"], cam["far"])).to_dict()
    assert abs(cam["near"] - 0.05) < 1e-6 and abs(cam["far"] - 200.0) < 1e-3
    assert reader.manifest["engine"]["name"] == "panda3d"
    for f in reader:
        for name, plane in f.planes.items():
            assert plane.shape[:2] == (H, W)
            if plane.dtype.is_floating_point:
                assert torch.isfinite(plane).all(), name
        assert set(f.targets) == {"cel", "pencil"} and f.targets["cel"].dtype == torch.uint8
        assert f.targets["cel"].float().std() > 5  # an image, not a constant
        ids = f.planes["ids"]
        assert (ids == 0).any() and (ids > 0).any()  # sky and objects
        depth = f.planes["depth"][..., 3].float()
        assert depth.min() >= 0.05 and depth.max() <= 200.0
        reader.layout.check_slot(reader.slot(f), W, H)
    assert not torch.equal(reader[1].meta.view, reader[2].meta.view)  # the camera flies
