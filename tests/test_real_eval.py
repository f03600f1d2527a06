"""`streamstyle eval --set real`: the held-out evaluation's own function on real scenes rendered by
Panda3D, and the rule that keeps those scenes out of training."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from streamstyle.engine_plugins.panda3d.realset import REAL_SCENES, is_real_eval_capture, real_scene_key, real_scenes

from .conftest import perturb


def test_the_real_split_names_its_scenes_by_any_of_their_names():
    assert real_scene_key("/x/DamagedHelmet/DamagedHelmet.gltf") == "helmet"
    assert real_scene_key("models/panda") == "panda" and real_scene_key("Suzanne") == "suzanne"
    assert is_real_eval_capture({"name": "panda3d", "scene": "/a/Suzanne/Suzanne.gltf"})
    assert not is_real_eval_capture({"name": "panda3d", "scene": "teapot"})
    assert not is_real_eval_capture({"name": "reference", "scene": "helmet"})  # another engine's scene
    assert not is_real_eval_capture(None)
    assert real_scenes("all") == list(REAL_SCENES) and real_scenes("damagedhelmet,panda") == ["helmet", "panda"]
    with pytest.raises(ValueError, match="unknown real scene.*teapot"):
        real_scenes("helmet,teapot")


def _capture(tmp_path, name, engine):
    cap = tmp_path / name
    run = subprocess.run([sys.executable, "-m", "streamstyle", "render", "--seed", "3", "--frames", "2", "--size",
                          "32x32", "--out", str(cap), "--styles", "noir", "--quiet"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    manifest = json.loads((cap / "manifest.json").read_text())
    manifest["engine"] = engine
    (cap / "manifest.json").write_text(json.dumps(manifest))
    return cap


def test_training_refuses_captures_of_real_eval_scenes(tmp_path):
    from streamstyle.model.training.data import CaptureClips

    held = _capture(tmp_path, "held", {"name": "panda3d", "scene": "/assets/DamagedHelmet/DamagedHelmet.gltf"})
    free = _capture(tmp_path, "free", {"name": "panda3d", "scene": "teapot"})
    with pytest.raises(ValueError, match="real-scene evaluation split") as err:
        CaptureClips([str(free), str(held)], 2)
    assert str(held) in str(err.value) and str(free) not in str(err.value)
    assert CaptureClips([str(free)], 2).clip(0).style == "noir"
    assert len(CaptureClips([str(free), str(held)], 2, allow_eval_scenes=True).readers) == 2


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    from streamstyle.model.config import preset
    from streamstyle.model.network import StreamStyleModel
    from streamstyle.model.weights import save_weights

    g = torch.Generator().manual_seed(7)
    return save_weights(perturb(StreamStyleModel(preset("tiny")), g), tmp_path_factory.mktemp("w") / "tiny")


def test_eval_set_real_on_a_real_scene(tiny_weights, tmp_path):
    pytest.importorskip("panda3d.core", reason="panda3d is not installed (pip install -e '.[panda3d]')")
    pytest.importorskip("gltf", reason="panda3d-gltf is not installed (pip install -e '.[panda3d]')")
    from streamstyle.engine_plugins.panda3d.scenes import find_asset

    if find_asset("helmet") is None:
        pytest.skip("the DamagedHelmet asset is not beside the repository (../shared/assets)")
    out, sheet = tmp_path / "real.json", tmp_path / "real.png"
    run = subprocess.run([sys.executable, "-m", "streamstyle", "eval", "--set", "real", "--scenes", "helmet",
                          "--styles", "cel,noir", "--frames", "3", "--size", "64x48", "--weights", str(tiny_weights),
                          "--device", "cpu", "--quiet", "--json", str(out), "--stills", str(sheet)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["set"] == "real" and report["sequences"] == ["helmet"] and report["seeds"] == []
    assert report["size"] == [64, 48] and report["frames"] == 3
    assert set(report["styles"]) == {"cel", "noir"}
    keys = {"psnr", "ssim", "warp_ratio", "adherence", "baseline_psnr", "baseline_ssim", "baseline_warp_ratio",
            "baseline_adherence"}
    for m in [*report["styles"].values(), report["overall"]]:
        assert keys <= set(m)  # the keys reports have always had, beside the newer ones (test_eval_quality)
        assert all(math.isfinite(v) for v in m.values()), m
        assert 0 <= m["adherence"] <= 1 and -1 <= m["ssim"] <= 1 and m["psnr"] > 0
        assert m["warp_ratio"] > 0  # the camera and the movers move: there is warp error to measure
    assert "OVERALL" in run.stdout and "cel" in run.stdout
    from PIL import Image

    img = Image.open(sheet)
    assert img.size[0] == 3 * 128 and img.size[1] > 96  # engine, cel, noir; one scene row


def test_eval_set_real_refuses_an_unknown_scene(tiny_weights):
    run = subprocess.run([sys.executable, "-m", "streamstyle", "eval", "--set", "real", "--scenes", "teapot",
                          "--weights", str(tiny_weights), "--device", "cpu", "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "unknown real scene" in run.stderr and "helmet" in run.stderr
