"""The capture format: round trip, streaming, damaged chunks, versions, rejected frames."""

import json
import subprocess
import sys

import pytest
import torch

from streamstyle.engine_plugins.capture import (CaptureError, CaptureReader, CaptureVersionError, CaptureWriter,
                                                 ChunkError, FrameMeta)
from streamstyle.engine_plugins.reference_engine import CameraPath, Renderer, Scene
from streamstyle.engine_plugins.reference_engine.gbuffers import to_planes, to_slot
from streamstyle.engine_plugins.reference_engine.oracles import STYLES
from streamstyle.engine_plugins.reference_engine.record import to_rgb8
from streamstyle.model.layout import reference_layout

W, H = 40, 24
STYLE_SET = {"cel": ["cel shading"], "noir": ["film noir"]}


@pytest.fixture(scope="module")
def frames():
    scene = Scene.generate(9, objects=8)
    r = Renderer(scene, CameraPath("cuts", seed=9, extent=scene.extent, cut_every=3), W, H)
    return [r.render(i) for i in range(5)]


def write(path, frames, chunk_frames=2, close=True):
    layout = reference_layout(W, H)
    w = CaptureWriter(path, W, H, 30.0, layout, extras={"surface_pos": ("float16", 3)}, styles=STYLE_SET,
                      engine={"name": "test"}, chunk_frames=chunk_frames)
    for f in frames:
        w.append(to_planes(f, layout), targets={s: to_rgb8(STYLES[s](f)) for s in STYLE_SET},
                 extras={"surface_pos": f.surface_pos.half()},
                 meta=FrameMeta(time=f.time, cut=f.cut, view=f.view, proj=f.proj, jitter=(0.25, -0.25)))
    if close:
        w.close()
    return w


def test_round_trip_keeps_every_buffer_target_and_matrix(tmp_path, frames):
    write(tmp_path / "cap", frames)
    rd = CaptureReader(tmp_path / "cap")
    layout = reference_layout(W, H)
    assert len(rd) == 5 and [c["count"] for c in rd.chunks] == [2, 2, 1]
    assert rd.styles == STYLE_SET and rd.manifest["conventions"]["motion"] == "current_to_previous"
    for f, g in zip(frames, rd):
        want = to_planes(f, layout)
        assert all(torch.equal(g.planes[k], want[k]) for k in want)
        assert g.planes["roughness"] is g.planes["metallic"]  # one shared plane, stored once
        assert torch.equal(g.targets["noir"], to_rgb8(STYLES["noir"](f)))
        assert torch.equal(g.extras["surface_pos"], f.surface_pos.half())
        assert torch.equal(g.meta.view, f.view) and g.meta.cut == f.cut and g.meta.jitter == (0.25, -0.25)
        assert torch.equal(rd.slot(g), to_slot(f, layout))
    assert [g.meta.cut for g in rd] == [False, False, False, True, False]


def test_a_frames_info_round_trips_per_chunk_and_a_non_json_one_is_refused(tmp_path, frames):
    layout = reference_layout(W, H)
    w = CaptureWriter(tmp_path / "cap", W, H, 30.0, layout, chunk_frames=2)
    infos = [{"seq": 7, "prompt": [["film noir", 0.5], ["ink", 0.5]], "params": {"steps": 2}}, None,
             {"seq": 9, "dt": 0.016}]
    for f, info in zip(frames, infos):
        w.append(to_planes(f, layout), meta=FrameMeta(time=f.time, info=info))
    for bad, words in [({"x": object()}, "JSON object"), ({"x": float("nan")}, "JSON object"), ([1, 2], "JSON object")]:
        with pytest.raises(CaptureError, match=words):
            w.append(to_planes(frames[0], layout), meta=FrameMeta(info=bad))
        assert w.frames == 3
    w.close()
    assert [g.meta.info for g in CaptureReader(tmp_path / "cap")] == infos  # a frame without one reads as None
    write(tmp_path / "old", frames[:2])  # no frame has info: the chunks carry none
    assert [g.meta.info for g in CaptureReader(tmp_path / "old")] == [None, None]


def test_writing_streams_and_a_crash_keeps_the_finished_chunks(tmp_path, frames):
    w = write(tmp_path / "cap", frames[:3], chunk_frames=2, close=False)  # never closed: a crash
    assert (tmp_path / "cap" / "chunk-000000.safetensors").exists()
    rd = CaptureReader(tmp_path / "cap")
    assert len(rd) == 2 and w.frames == 3  # the third frame was still buffered
    assert torch.equal(rd[1].planes["depth"], to_planes(frames[1], reference_layout(W, H))["depth"])
    assert not list((tmp_path / "cap").glob("*.tmp"))


@pytest.mark.parametrize("damage, words", [
    ("truncate", "truncated or padded"),
    ("flip", "corrupted: its SHA-256 does not match"),
    ("delete", "missing"),
])
def test_damaged_chunk_is_named_and_the_other_frames_survive(tmp_path, frames, damage, words):
    write(tmp_path / "cap", frames)
    chunk = tmp_path / "cap" / "chunk-000001.safetensors"
    data = chunk.read_bytes()
    if damage == "truncate":
        chunk.write_bytes(data[: len(data) // 3])
    elif damage == "flip":
        mid = len(data) // 2
        chunk.write_bytes(data[:mid] + bytes([data[mid] ^ 0x5A]) + data[mid + 1:])
    else:
        chunk.unlink()
    rd = CaptureReader(tmp_path / "cap")
    with pytest.raises(ChunkError, match=f"chunk-000001.safetensors: {words}") as info:
        rd[2]
    assert info.value.chunk == "chunk-000001.safetensors" and info.value.code == "bad_chunk"
    with pytest.raises(ChunkError):
        list(rd)
    rd2 = CaptureReader(tmp_path / "cap")
    kept = [f.index for f in rd2.iter_frames(skip_damaged=True)]
    assert kept == [0, 1, 4]
    assert [d.chunk for d in rd2.damaged] == ["chunk-000001.safetensors"]
    assert torch.equal(rd2[4].planes["color"], to_planes(frames[4], reference_layout(W, H))["color"])


def test_manifest_versions_and_formats_are_checked(tmp_path, frames):
    write(tmp_path / "cap", frames[:1])
    mf = tmp_path / "cap" / "manifest.json"
    m = json.loads(mf.read_text())
    mf.write_text(json.dumps({**m, "version": 2}))
    with pytest.raises(CaptureVersionError, match="version 2; this reader reads versions 1..1"):
        CaptureReader(tmp_path / "cap")
    mf.write_text(json.dumps({**m, "format": "something-else"}))
    with pytest.raises(CaptureVersionError, match="not a streamstyle-capture manifest"):
        CaptureReader(tmp_path / "cap")
    mf.write_text("{oops")
    with pytest.raises(CaptureError, match="not valid JSON"):
        CaptureReader(tmp_path / "cap")
    mf.write_text(json.dumps({k: v for k, v in m.items() if k != "layout"}))
    with pytest.raises(CaptureError, match="malformed"):
        CaptureReader(tmp_path / "cap")
    with pytest.raises(CaptureError, match="has no manifest.json"):
        CaptureReader(tmp_path / "nothing")


def test_rejected_frames_write_nothing(tmp_path, frames):
    layout = reference_layout(W, H)
    w = CaptureWriter(tmp_path / "cap", W, H, 30.0, layout, styles=STYLE_SET, chunk_frames=1)
    good = to_planes(frames[0], layout)
    targets = {s: to_rgb8(STYLES[s](frames[0])) for s in STYLE_SET}
    for planes, tg, words in [
        ({**good, "depth": good["depth"].half()}, targets, "plane 'depth'"),
        ({k: v for k, v in good.items() if k != "color"}, targets, "lacks plane 'color'"),
        (good, {"sepia": targets["cel"]}, "not one of this capture's styles"),
        (good, {"cel": targets["cel"]}, "every style or none"),
        (good, {**targets, "cel": targets["cel"].float()}, "uint8"),
    ]:
        with pytest.raises(CaptureError, match=words):
            w.append(planes, targets=tg)
        assert w.frames == 0 and not list((tmp_path / "cap").glob("chunk-*"))
    w.append(good, targets=targets)
    w.close()
    assert len(CaptureReader(tmp_path / "cap")) == 1
    with pytest.raises(CaptureError, match="closed"):
        w.append(good, targets=targets)
    with pytest.raises(CaptureError, match="already holds a capture"):
        CaptureWriter(tmp_path / "cap", W, H, 30.0, layout)


def test_render_and_preview_commands_in_a_real_process(tmp_path):
    cap, sheet = tmp_path / "cap", tmp_path / "sheet.png"
    run = subprocess.run([sys.executable, "-m", "streamstyle", "render", "--seed", "4", "--frames", "3",
                          "--size", "64x48", "--out", str(cap), "--styles", "cel,pencil", "--camera", "strafe"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "3/3" in run.stderr  # the progress bar reached the end
    rd = CaptureReader(cap)
    assert len(rd) == 3 and set(rd.styles) == {"cel", "pencil"} and rd.manifest["engine"]["seed"] == 4
    run = subprocess.run([sys.executable, "-m", "streamstyle", "preview", str(cap), "--out", str(sheet),
                          "--tile-width", "64"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    from PIL import Image

    img = Image.open(sheet)
    assert img.size == (64 * 7, 18 + 3 * 48)  # color, depth, normals, albedo, motion, 2 styles; 3 rows
    bad = subprocess.run([sys.executable, "-m", "streamstyle", "render", "--seed", "4", "--frames", "1",
                          "--size", "64x48", "--out", str(tmp_path / "x"), "--styles", "sepia"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown style(s) sepia" in bad.stderr
    assert not (tmp_path / "x").exists()  # refused before anything was written
    again = subprocess.run([sys.executable, "-m", "streamstyle", "render", "--seed", "4", "--frames", "1",
                            "--size", "64x48", "--out", str(cap), "--quiet"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already holds a capture" in again.stderr
