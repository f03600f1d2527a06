"""Time `Stylizer.step` (eager PyTorch, the reference kernels) per preset, size, steps and dtype.

Correctness first: each configuration's first frame is compared with a float32 run of the same
model on the same device; a configuration whose output is not finite or drifts past tolerance is
reported as FAILED and not timed. Prints one table; --json writes every figure.

    python benchmarks/bench_step.py --preset tiny --size 64x64 --device cpu
    python benchmarks/bench_step.py --preset default --size 720p --size 1080p --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import json

import torch

from streamstyle.model.config import preset
from streamstyle.model.network import StreamStyleModel
from streamstyle.tools.bench import check_and_time
from streamstyle.tools.cli import parse_size

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append")
    ap.add_argument("--size", type=parse_size, action="append")
    ap.add_argument("--steps", default="2")
    ap.add_argument("--dtype", default="fp32", help="comma list of fp32, bf16, fp16")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backend", default="auto", help="comma list of kernel backends: auto, reference, triton")
    ap.add_argument("--graphs", default="off", help="comma list of off, on: one CUDA graph per session shape")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--json")
    args = ap.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for name in args.preset or ["tiny"]:
        cfg = preset(name)
        torch.manual_seed(0)
        model32 = StreamStyleModel(cfg).to(device).eval()
        for w, h in args.size or [(64, 64)]:
            w, h = -(-w // cfg.patch) * cfg.patch, -(-h // cfg.patch) * cfg.patch
            for steps in map(int, args.steps.split(",")):
                for dt in args.dtype.split(","):
                    for be in args.backend.split(","):
                      for gr in args.graphs.split(","):
                        row = check_and_time(model32, w, h, steps, dt, device, args.frames, gen, be, gr == "on")
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\nStylizer.step, eager PyTorch reference kernels, on {dev}")
    print(f"{'preset':<8} {'size':>10} {'steps':>5} {'dtype':>5} {'kernels':>15} {'p50 ms':>8} {'p99 ms':>8} {'TFLOP/s':>8} {'err':>8}")
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['preset']:<8} {r['size']:>10} {r['steps']:>5} {r['dtype']:>5} {r['backend']:>15}  FAILED correctness "
                  f"(err {r['rel_err_vs_fp32']:.2e}): not timed")
            continue
        print(f"{r['preset']:<8} {r['size']:>10} {r['steps']:>5} {r['dtype']:>5} {r['backend']:>15} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['achieved_tflops']:>8.3f} {r['rel_err_vs_fp32']:>8.1e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": dev, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
