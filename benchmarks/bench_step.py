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
import statistics
import time

import torch

from streamstyle.kernels import backend as kernel_backend
from streamstyle.model.config import preset
from streamstyle.model.frame import FrameParams
from streamstyle.model.info import model_info
from streamstyle.model.layout import FORMATS, reference_layout
from streamstyle.model.network import StreamStyleModel
from streamstyle.model.stylizer import Stylizer
from streamstyle.service.cli import parse_size

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "fp16": 2e-2}


def random_slot(layout, w, h, device, gen):
    slot = torch.zeros(layout.slot_bytes(w, h), dtype=torch.uint8, device=device)
    for name, plane in layout.view(slot, w, h).items():
        dtype, _, unorm = FORMATS[layout[name].format]
        if unorm:
            plane.copy_(torch.randint(0, 256, plane.shape, generator=gen, dtype=torch.int32).to(torch.uint8))
        elif dtype == torch.int32:
            plane.copy_(torch.randint(0, 40, plane.shape, generator=gen, dtype=torch.int32))
        elif name == "depth":
            plane.copy_(torch.rand(plane.shape, generator=gen) * 50 + 1)
        elif name == "motion":
            plane.copy_((torch.randn(plane.shape, generator=gen) * 2).to(plane.dtype))
        else:
            plane.copy_(torch.rand(plane.shape, generator=gen).to(plane.dtype))
    return slot


def run_one(model32, cfg, w, h, steps, dtype_name, device, frames, gen, backend_name="auto", graphs=False):
    layout = reference_layout(w, h)
    slots = [random_slot(layout, w, h, device, gen) for _ in range(3)]  # rotate: no cache-resident input
    model = StreamStyleModel(cfg).to(device)
    model.load_state_dict(model32.state_dict())
    model = model.to(DTYPES[dtype_name])
    ref = Stylizer(model32, device=device)
    sty = Stylizer(model, device=device, check_finite=False, cuda_graphs=graphs)
    params = FrameParams(steps=steps)
    sr, ss = ref.open_session(w, h, layout, seed=1), sty.open_session(w, h, layout, seed=1)
    kernel_backend.set_backend("reference")  # the check is always against the reference kernels in fp32
    a = ref.step(sr, slots[0], params)
    kernel_backend.set_backend(backend_name)
    b = sty.step(ss, slots[0], params)
    err = ((a - b).norm() / a.norm()).item()
    row = {"preset": cfg.name, "size": f"{w}x{h}", "steps": steps, "dtype": dtype_name,
           "backend": backend_name + ("+graph" if graphs else ""),
           "rel_err_vs_fp32": err}
    if not torch.isfinite(b).all() or err > TOLERANCE[dtype_name]:
        row["status"] = "FAILED"
        return row
    for i in range(3):  # warm-up
        sty.step(ss, slots[i % 3], params)
    times = []
    cuda = device.type == "cuda"
    for i in range(frames):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            sty.step(ss, slots[i % 3], params)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            sty.step(ss, slots[i % 3], params)
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    info = model_info(cfg, w, h, steps)
    row.update(status="ok", p50_ms=statistics.median(times), p99_ms=times[min(len(times) - 1, int(0.99 * len(times)))],
               gflop_per_frame=info["flops_per_frame"] / 1e9, tokens=info["tokens_per_frame"])
    row["achieved_tflops"] = info["flops_per_frame"] / (row["p50_ms"] * 1e-3) / 1e12
    if cuda:
        row["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return row


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
                        row = run_one(model32, cfg, w, h, steps, dt, device, args.frames, gen, be, gr == "on")
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
