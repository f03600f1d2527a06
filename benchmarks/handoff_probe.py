"""Where the service's time outside the model goes, per frame, over the real path.

Starts `streamstyle serve` as a child process (optionally under cProfile), drives N frames of one
size through a CUDA IPC (or shm) ring from this process, and prints: the service's handoff
(`total_ms - model_ms` from its "done" timings), the client's round trip beyond the service's
`total_ms` (ZeroMQ both ways, decode, wake-ups), and with `--profile` the service's functions by
own time per frame. Usage: python benchmarks/handoff_probe.py --size 1920x1080 --frames 500 [--profile]
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    args = ap.parse_args()
    from streamstyle.engine_plugins.reference_engine import CameraPath, Renderer, Scene
    from streamstyle.engine_plugins.reference_engine.gbuffers import to_slot
    from streamstyle.interop.client import Client
    from streamstyle.model.layout import reference_layout

    w, h = (int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="probe-"))
    address, ready = f"ipc://{work}/s.sock", work / "ready"
    prof = Path(args.out) / f"service-{args.size}.prof"
    pre = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "streamstyle"] if args.profile else \
        [sys.executable, "-m", "streamstyle"]
    proc = subprocess.Popen([*pre, "serve", "--bind", address, "--ready-file", str(ready), "--device", args.device,
                             "--quiet", "--deadline-ms", "1000"])
    try:
        while not ready.exists():
            if proc.poll() is not None:
                raise SystemExit("service exited")
            time.sleep(0.1)
        client = Client(address, timeout_s=120)
        scene = Scene.generate(3)
        renderer = Renderer(scene, CameraPath("handheld", seed=3, extent=scene.extent), w, h, device=args.device)
        layout = reference_layout(w, h)
        slots = [to_slot(renderer.render(i), layout) for i in range(8)]
        backend = "cuda-ipc" if args.device.startswith("cuda") else "shm"
        session = client.open_session(w, h, layout, backend=backend, params={"steps": 2}, prompt="watercolor")
        handoff, beyond, queue, extra = [], [], [], {}
        for i in range(args.frames + 20):
            slot = session.acquire_slot(timeout_s=30)
            session.ring.input(slot).copy_(slots[i % len(slots)])
            if args.device.startswith("cuda"):
                import torch

                torch.cuda.current_stream().synchronize()
            t0 = time.perf_counter()
            ev = client.wait(session, session.submit(slot), timeout_s=60)
            rtt = (time.perf_counter() - t0) * 1000
            if i < 20 or ev.status != "done":
                continue
            t = ev.timings
            handoff.append((t["total_ms"] - t["model_ms"]) * 1000)
            beyond.append((rtt - t["total_ms"]) * 1000)
            queue.append(t["queue_ms"] * 1000)
            for k in [k for k in t if k.startswith("h_")]:
                extra.setdefault(k, []).append(t[k] * 1000)
        session.close()
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)

    def pct(xs, q):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    print(f"{args.size} {backend} frames={len(handoff)} profile={args.profile}")
    for name, xs in (("handoff (total-model) us", handoff), ("queue us", queue), ("client rtt beyond total us", beyond),
                     *((k + " us", v) for k, v in extra.items())):
        print(f"  {name:28} p50 {pct(xs, .5):8.1f}  p99 {pct(xs, .99):8.1f}")
    if args.profile:
        st = pstats.Stats(str(prof))
        st.sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
