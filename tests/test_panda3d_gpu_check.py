"""engine_plugins/panda3d/gpu-check.sh's CPU path: Panda3D on llvmpipe, an shm ring, a real service
in a child process; the GPU run (EGL device, CUDA IPC) uses the same script and measurement."""

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

from .conftest import perturb

pytest.importorskip("panda3d.core", reason="panda3d is not installed (pip install -e '.[panda3d]')")
pytest.importorskip("gltf", reason="panda3d-gltf is not installed (pip install -e '.[panda3d]')")

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_script_runs_its_cpu_path(tmp_path):
    from streamstyle.engine_plugins.panda3d.scenes import find_asset
    from streamstyle.model.config import preset
    from streamstyle.model.network import StreamStyleModel
    from streamstyle.model.weights import save_weights

    if find_asset("helmet") is None:
        pytest.skip("the DamagedHelmet asset is not beside the repository (../shared/assets)")
    weights = save_weights(perturb(StreamStyleModel(preset("tiny")), torch.Generator().manual_seed(3)), tmp_path / "w")
    env = {**os.environ, "BACKEND": "shm", "DEVICE": "cpu", "EGL_DEVICE": "", "SIZES": "64x48,80x48", "FRAMES": "2",
           "EXPECT": ""}
    run = subprocess.run([str(ROOT / "engine_plugins" / "panda3d" / "gpu-check.sh"), str(tmp_path / "out"),
                          "--weights", str(weights), "--warmup", "1"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "panda3d-gpu.json").read_text())
    assert report["backend"] == "shm" and report["renderer"]
    assert [r["size"] for r in report["rows"]] == [[64, 48], [80, 48]]
    for row in report["rows"]:
        assert row["frames"] == 2 and row["error_count"] == 0 and row["nonfinite"] == 0
        for key in ("render_ms", "read_ms", "pack_ms", "service_ms", "model_ms", "round_trip_ms"):
            assert math.isfinite(row[key]["p50"]) and row[key]["p50"] > 0, key
        assert row["copy_ms"]["p50"] < 0.1  # shm: packed straight into the ring, nothing to copy
        assert row["round_trip_ms"]["p50"] >= row["service_ms"]["p50"] * 0.9
    assert "engine render" in run.stdout and "80x48" in run.stdout
    assert (tmp_path / "out" / "panda3d-gpu.log").read_text().count("64x48") >= 1


def test_gpu_check_refuses_a_renderer_it_did_not_expect(tmp_path):
    from streamstyle.engine_plugins.panda3d.scenes import find_asset

    if find_asset("helmet") is None:
        pytest.skip("the DamagedHelmet asset is not beside the repository (../shared/assets)")
    env = {**os.environ, "BACKEND": "shm", "DEVICE": "cpu", "EGL_DEVICE": "", "SIZES": "64x48", "FRAMES": "1",
           "EXPECT": "NVIDIA"}
    run = subprocess.run([str(ROOT / "engine_plugins" / "panda3d" / "gpu-check.sh"), str(tmp_path / "out")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if "NVIDIA" in run.stdout.split("Panda3D renders on:")[-1].split("\n")[0]:
        pytest.skip("this machine renders on NVIDIA")
    assert run.returncode != 0 and "EGL did not reach the GPU" in run.stdout + run.stderr
