"""`streamstyle bench`: correctness gate, stages, floor, the service run, peers (tiny, on the CPU)."""

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from streamstyle.model.config import preset
from streamstyle.model.network import StreamStyleModel
from streamstyle.tools.bench import BenchConfig, check_and_time, format_bench, run_bench, stage_times


def test_a_fast_path_that_fails_its_check_is_not_timed(gen):
    model = StreamStyleModel(preset("tiny")).eval()
    ok = check_and_time(model, 32, 32, 2, "bf16", torch.device("cpu"), 3, gen)
    assert ok["status"] == "ok" and 0 < ok["rel_err_vs_fp32"] < 5e-2 and ok["p50_ms"] > 0
    # bf16 cannot be exact: with no tolerance the same path fails its check and carries no timings
    failed = check_and_time(model, 32, 32, 2, "bf16", torch.device("cpu"), 3, gen, tolerance=0.0)
    assert failed["status"] == "FAILED" and "p50_ms" not in failed
    text = format_bench({"card": "CPU", "model": "tiny", "weights": "untrained", "dtype": "bf16",
                         "floor": {"matmul_tflops": 1.0, "copy_gbps": 10.0}, "rows": [failed], "service": [], "peers": []})
    assert "FAILED" in text and "not timed" in text


def test_stages_cover_the_frame(gen):
    model = StreamStyleModel(preset("tiny")).eval()
    st = stage_times(model, 32, 48, 3, torch.device("cpu"), 2, gen)
    assert list(st) == ["pack", "warp", "dit_1", "dit_2", "dit_3", "history", "decode"]  # decode: refine + write the output format
    assert all(v > 0 for v in st.values())


def test_bench_runs_end_to_end_through_the_service(tmp_path):
    report = run_bench(BenchConfig(preset="tiny", sizes=[(64, 48)], steps=[1, 2], frames=12, device="cpu",
                                   stage_reps=2), log=lambda *_: None)
    assert [r["status"] for r in report["rows"]] == ["ok", "ok"]
    for r in report["rows"]:
        assert r["floor_ms"] > 0 and r["floor_ratio"] == pytest.approx(r["p50_ms"] / r["floor_ms"])
        assert set(r["stages_ms"]) >= {"pack", "warp", "decode"}
    assert [(r["size"], r["steps"], r["frames"]) for r in report["service"]] == [("64x48", 1, 12), ("64x48", 2, 12)]
    assert all(r["late"] == 0 and r["service_p50_ms"] >= r["model_p50_ms"] > 0 for r in report["service"])
    text = format_bench(report)
    assert "Through the service" in text and "64x48" in text


def test_the_cli_takes_any_size_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "streamstyle", "bench", "--preset", "tiny", "--sizes", "60x40",
                          "--steps", "1", "--frames", "5", "--no-service", "--device", "cpu", "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["rows"][0]["size"] == "60x40" and report["rows"][0]["status"] == "ok" and report["service"] == []
    bad = subprocess.run([sys.executable, "-m", "streamstyle", "bench", "--steps", "0,9"],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "step counts from 1 to 4" in bad.stderr


def test_peers_run_on_the_cpu_at_tiny_scale():
    pytest.importorskip("diffusers")
    from streamstyle.tools.peers import run_peers

    rows = run_peers(torch.device("cpu"), [(64, 64), (4096, 4096)], scale="tiny", log=lambda *_: None)
    names = [(r["peer"], r["steps"]) for r in rows]
    assert names[0] == ("StreamDiffusion (SD-turbo UNet + TAESD)", 1)  # no CUDA graph on the CPU
    assert ("SANA (tiny DiT + DC-AE)", 1) in names and ("SANA (tiny DiT + DC-AE)", 2) in names
    assert all(r["size"] in ("64x64",) for r in rows)  # 4096x4096 is over the SANA cap: skipped
    assert all(r["p50_ms"] > 0 for r in rows)


@pytest.mark.slow
def test_the_studio_bench_runs_every_configuration_through_a_real_service(tmp_path):
    """benchmarks/bench_studio.py, tiny and small: every row is run, every recorded frame is
    accounted for (the bench refuses to report otherwise), and its table is printed."""
    from pathlib import Path

    out = tmp_path / "studio.json"
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_studio.py"
    run = subprocess.run([sys.executable, str(bench), "--size", "32x24", "--frames", "8", "--rounds", "2", "--warmup", "2",
                          "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rep = json.loads(out.read_text())
    have_video = importlib.util.find_spec("imageio_ffmpeg") is not None
    names = {r["config"] for r in rep["rows"]}
    assert {"off", "page", "page + input view", "record inputs"} <= names
    assert ("record both" in names) == have_video
    for r in rep["rows"]:
        assert r["frames"] == 8 and r["p50_ms"] > 0
        if r["config"].startswith("record") or r["config"] == "everything":
            assert r["recorded"] + r["left_out"] == 8 and r["recorded"] > 0
    hooks = {(h["config"], h["hook"]) for h in rep["hooks"]}
    assert ("record inputs", "input copies (capture, input view)") in hooks
    assert ("page + input view", "preview snapshot") in hooks and ("off", "preview snapshot") not in hooks
    assert "frame path" in run.stdout and "record inputs" in run.stdout
