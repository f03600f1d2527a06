"""Data-parallel training throughput: frames/s of `streamstyle train` at 1 and N GPUs with the same
per-GPU batch, and the scaling efficiency (frames/s at N) / (N x frames/s at 1).

    python benchmarks/bench_train_scaling.py                       # every visible GPU (1 on a 1-GPU box)
    python benchmarks/bench_train_scaling.py --gpus 2 --per-gpu-batch 16 --size 256 --json scaling.json
    python benchmarks/bench_train_scaling.py --device cpu --preset tiny --size 32 --per-gpu-batch 2 --gpus 2

Each row is a real `streamstyle train --nproc n` run (NCCL on CUDA, gloo on the CPU). The clips
come from a fixed pool (`--pool`, the global batch: each rank renders its share once, in the first
step), so the figure is the training step itself (forward, backward, gradient all-reduce, AdamW,
EMA), not the renderer; `--bank N` measures the clip-bank recipe instead, renderer included. The
first `--skip` steps (rendering, warm-up, allocator growth) are left out; frames/s is rank 0's
global frames over each step's wall time, the median over the rest.

First, a correctness check (`--no-check` skips it): a short fp32 run of `tiny` with the same global
batch on n GPUs and on one must end with the same weights; if not, no scaling figure is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file


def train(out: Path, nproc: int, args: list[str]) -> None:
    cmd = [sys.executable, "-m", "streamstyle", "train", "--out", str(out), "--nproc", str(nproc), "--quiet", *args]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}\nfailed ({run.returncode}):\n{run.stderr[-4000:]}")


def check(n: int, device: str, root: Path) -> float:
    """The largest weight difference between n ranks and one rank on the same run (tiny, fp32)."""
    common = ["--preset", "tiny", "--size", "32", "--frames", "2", "--batch", str(2 * n), "--pool", str(2 * n),
              "--steps", "3", "--warmup", "2", "--lr", "3e-3", "--no-prompts", "--distill", "0.34", "--precision",
              "fp32", "--device", device, "--bank", "0", "--checkpoint-every", "1000"]
    train(root / "check1", 1, common)
    train(root / f"check{n}", n, common)
    a, b = load_file(str(root / "check1" / "raw.safetensors")), load_file(str(root / f"check{n}" / "raw.safetensors"))
    return max((a[k] - b[k]).abs().max().item() for k in a)


def measure(n: int, opts: argparse.Namespace, root: Path) -> dict:
    batch = n * opts.per_gpu_batch
    data = ["--bank", str(opts.bank)] if opts.bank else ["--bank", "0", "--pool", str(batch)]
    out = root / f"run{n}"
    train(out, n, ["--preset", opts.preset, "--size", str(opts.size), "--frames", str(opts.frames), "--batch",
                   str(batch), "--steps", str(opts.steps), "--warmup", "5", "--no-prompts", "--device", opts.device,
                   "--distill", "1" if opts.phase == "few-step" else "0", "--checkpoint-every", str(10**9), *data])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][opts.skip:]
    fps = statistics.median(r["frames_per_s"] for r in rows)
    return {"gpus": n, "global_batch": batch, "per_gpu_batch": opts.per_gpu_batch, "steps_timed": len(rows),
            "step_ms": batch * opts.frames / fps * 1e3, "frames_per_s": fps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--gpus", type=int, help="the N to compare with 1 (default: every visible GPU; on the CPU, 2 processes)")
    ap.add_argument("--per-gpu-batch", type=int, default=16, help="clips per GPU per step (default 16)")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--skip", type=int, default=5, help="steps left out of the timing (default 5)")
    ap.add_argument("--phase", default="flow", choices=["flow", "few-step"])
    ap.add_argument("--bank", type=int, default=0, help="> 0: draw clips from a clip bank of this many shots (renderer included)")
    ap.add_argument("--no-check", action="store_true", help="skip the correctness check")
    ap.add_argument("--json", help="write the report here")
    opts = ap.parse_args()
    if opts.skip >= opts.steps:
        raise SystemExit("--skip must be less than --steps")
    n = opts.gpus or (torch.cuda.device_count() if opts.device == "cuda" else 2)
    if opts.device == "cuda" and not 1 <= n <= torch.cuda.device_count():
        raise SystemExit(f"--gpus {n}: this machine has {torch.cuda.device_count()} GPU(s)")
    card = torch.cuda.get_device_name() if opts.device == "cuda" else "CPU processes (gloo)"
    report: dict = {"card": card, "count": n, "preset": opts.preset, "size": opts.size, "frames": opts.frames,
                    "phase": opts.phase, "data": f"bank {opts.bank}" if opts.bank else "pool", "rows": []}
    with tempfile.TemporaryDirectory(prefix="bench-train-scaling-") as tmp:
        root = Path(tmp)
        if n > 1 and not opts.no_check:
            diff = check(n, opts.device, root)
            report["check_max_weight_diff"] = diff
            print(f"check: {n} ranks vs 1 on the same run (tiny, fp32, 3 steps): max weight difference {diff:.2e}")
            if diff > 1e-4:
                raise SystemExit(f"correctness check failed ({diff:.2e} > 1e-4): no scaling figure reported")
        for k in sorted({1, n}):
            report["rows"].append(measure(k, opts, root))
    base = report["rows"][0]["frames_per_s"]
    print(f"\n{opts.preset} preset, {opts.size}x{opts.size}, {opts.frames} frames a clip, {opts.phase} phase, "
          f"{report['data']}, {card}")
    print(f"{'GPUs':>5} {'global batch':>13} {'step ms':>9} {'frames/s':>10} {'efficiency':>11}")
    for row in report["rows"]:
        row["efficiency"] = row["frames_per_s"] / (row["gpus"] * base)
        print(f"{row['gpus']:>5} {row['global_batch']:>13} {row['step_ms']:>9.1f} {row['frames_per_s']:>10.1f} "
              f"{row['efficiency']:>10.0%}")
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=2))
        print(f"report: {opts.json}")


if __name__ == "__main__":
    main()
