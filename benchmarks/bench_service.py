"""End-to-end service timing: the service in its own process, this process as the engine.

Renders a handful of distinct reference-engine frames once (on the device), then submits frames in
lockstep through the real client and service over the chosen ring (CUDA IPC on a GPU, shared memory
on the CPU), switching prompts during the run. Reports per frame: service time (frame received to
done sent) p50/p99, model time, handoff overhead (service time outside the model), the engine's
round trip, and fps. First checks one frame against the model run in this process.

    python benchmarks/bench_service.py --device cuda --size 720p --frames 1000
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from streamstyle.engine_plugins.reference_engine import CameraPath, Renderer, Scene
from streamstyle.engine_plugins.reference_engine.gbuffers import to_slot
from streamstyle.model.layout import reference_layout
from streamstyle.service.cli import parse_size
from streamstyle.service.client import Client

PROMPTS = ["watercolor painting", "cel shading with ink outlines", "pencil hatching", "neon glow"]


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=parse_size, action="append")
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--preset", default="default", help="untrained weights of this preset, when no weights are shipped")
    ap.add_argument("--weights", help="a checkpoint (default: the shipped default model, else --preset untrained)")
    ap.add_argument("--no-prompts", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ss-bench-"))
    address, ready = f"ipc://{work}/s.sock", work / "ready"
    from streamstyle.model.weights import shipped_weights

    weights = args.weights or shipped_weights()
    cmd = [sys.executable, "-m", "streamstyle", "serve", "--bind", address, "--device", args.device,
           *(["--weights", str(weights)] if weights else ["--preset", args.preset]),
           "--ready-file", str(ready), "--quiet", "--deadline-ms", "1000"]
    if args.no_prompts:
        cmd.append("--no-prompts")
    service = subprocess.Popen(cmd)
    rows = []
    try:
        while not ready.exists():
            if service.poll() is not None:
                raise SystemExit("the service did not start")
            time.sleep(0.1)
        backend = "cuda-ipc" if args.device.startswith("cuda") else "shm"
        client = Client(address, timeout_s=120)
        for w, h in args.size or [(1280, 720)]:
            p = 16
            w, h = -(-w // p) * p, -(-h // p) * p
            scene = Scene.generate(3)
            renderer = Renderer(scene, CameraPath("handheld", seed=3, extent=scene.extent), w, h, device=args.device)
            layout = reference_layout(w, h)
            slots = [to_slot(renderer.render(i), layout) for i in range(8)]
            session = client.open_session(w, h, layout, backend=backend, params={"steps": args.steps},
                                          prompt=None if args.no_prompts else PROMPTS[0])
            total, model, rtt = [], [], []
            late = 0
            t_start = None
            for i in range(args.frames + 20):
                if i == 20:
                    t_start = time.perf_counter()
                if not args.no_prompts and i % 250 == 125:
                    session.set_prompt(PROMPTS[(i // 250 + 1) % len(PROMPTS)], blend_frames=8)
                slot = session.acquire_slot(timeout_s=30)
                session.ring.input(slot).copy_(slots[i % len(slots)])
                t0 = time.perf_counter()
                ev = client.wait(session, session.submit(slot), timeout_s=60)
                if i >= 20:
                    rtt.append((time.perf_counter() - t0) * 1000)
                    if ev.status != "done":
                        late += 1
                        continue
                    late += int(ev.late)
                    total.append(ev.timings["total_ms"])
                    model.append(ev.timings["model_ms"])
            wall = time.perf_counter() - t_start
            stats = session.stats()
            session.close()
            handoff = [t - m for t, m in zip(total, model)]
            row = {"size": f"{w}x{h}", "device": args.device, "backend": backend, "steps": args.steps,
                   "preset": args.preset, "weights": str(weights) if weights else "untrained", "frames": args.frames, "late": late, "dropped": stats["dropped"],
                   "fps": args.frames / wall, "service_p50_ms": pct(total, 0.5), "service_p99_ms": pct(total, 0.99),
                   "model_p50_ms": pct(model, 0.5), "handoff_p50_us": pct(handoff, 0.5) * 1000,
                   "handoff_p99_us": pct(handoff, 0.99) * 1000, "round_trip_p50_ms": pct(rtt, 0.5),
                   "round_trip_p99_ms": pct(rtt, 0.99)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        client.close()
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(30)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"\nService end to end on {dev} ({weights or args.preset + ' untrained'} model, service defaults: kernels auto, CUDA graphs on a GPU; "
          "lockstep engine)")
    print(f"{'size':>10} {'fps':>7} {'svc p50':>8} {'svc p99':>8} {'model':>8} {'handoff p50/p99 us':>19} {'rtt p50':>8} {'late':>5}")
    for r in rows:
        print(f"{r['size']:>10} {r['fps']:>7.1f} {r['service_p50_ms']:>8.2f} {r['service_p99_ms']:>8.2f} "
              f"{r['model_p50_ms']:>8.2f} {r['handoff_p50_us']:>9.0f}/{r['handoff_p99_us']:<9.0f} "
              f"{r['round_trip_p50_ms']:>8.2f} {r['late']:>5}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": dev, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
