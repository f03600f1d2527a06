"""Time the reference engine: one frame's G-buffers (render) and each style oracle, per size.

Correctness first: on a GPU the frame is also rendered on the CPU and compared (depth, ids, motion);
a mismatch is reported and the size is not timed.

    python benchmarks/bench_render.py --size 256x256 --device cpu
    python benchmarks/bench_render.py --size 1080p --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from streamstyle.engine_plugins.reference_engine import CameraPath, Renderer, Scene
from streamstyle.engine_plugins.reference_engine.oracles import STYLES
from streamstyle.tools.cli import parse_size


def timed(fn, device, reps):
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, action="append")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    device = torch.device(args.device)
    rows = []
    for w, h in args.size or [(256, 256)]:
        for seed in map(int, args.seeds.split(",")):
            scene = Scene.generate(seed)
            cam = CameraPath("handheld", seed=seed, extent=scene.extent)
            r = Renderer(scene, cam, w, h, device=device)
            frame = r.render(3)
            row = {"size": f"{w}x{h}", "seed": seed, "objects": scene.count, "device": str(device)}
            if device.type == "cuda":
                ref = Renderer(scene, cam, w, h, device="cpu").render(3)
                ids_ok = (frame.ids.cpu() == ref.ids).float().mean().item()
                mv_err = (frame.motion.cpu() - ref.motion).abs()[frame.ids.cpu()[..., 0] == ref.ids[..., 0]].max().item()
                row.update(ids_agree=ids_ok, motion_max_diff=mv_err)
                if ids_ok < 0.999 or mv_err > 0.05:  # float32 projection differs by a few hundredths of a pixel at 4K
                    row["status"] = "FAILED"
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    continue
            i = iter(range(4, 10 ** 9))
            row["render_ms"], frame = timed(lambda: r.render(next(i)), device, args.reps)
            batch_ms, _ = timed(lambda: r.render_many([next(i) for _ in range(8)]), device, max(3, args.reps // 4))
            row["render8_ms_per_frame"] = batch_ms / 8
            for name, fn in STYLES.items():  # noqa: B023
                row[f"{name}_ms"], _ = timed(lambda: fn(frame), device, max(3, args.reps // 3))
            row["status"] = "ok"
            rows.append(row)
            print(json.dumps(row), flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\nReference engine on {name}: median ms per frame")
    print(f"{'size':>10} {'seed':>5} {'objs':>5} {'render':>8} {'8 at once':>10} {'oracles (all)':>14}")
    for r_ in rows:
        if r_["status"] != "ok":
            print(f"{r_['size']:>10} {r_['seed']:>5} {r_['objects']:>5}  FAILED CPU/GPU agreement")
            continue
        oracles = sum(v for k, v in r_.items() if k.endswith("_ms") and not k.startswith("render"))
        print(f"{r_['size']:>10} {r_['seed']:>5} {r_['objects']:>5} {r_['render_ms']:>8.2f} "
              f"{r_['render8_ms_per_frame']:>10.2f} {oracles:>14.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
