"""What the studio side (metrics, OSC, the preview page, recording) adds to the frame path.

Runs a real service on a thread of this process (real ZeroMQ, a real ring) with every studio
part on: a Prometheus scrape every 0.5 s, a preview page polling frames at 15 fps, OSC strength
changes at 30 Hz, and a recording. Each studio hook the loop calls is timed in place (the
metrics update, the preview's check and copy, the recorder's copy, the control queue's drain),
so the added host time per frame is measured directly, beside the service's own p50 with the
studio off and on (those two move with the machine's load; the hook times do not).

    python benchmarks/bench_studio.py --size 320x192 --frames 200
    python benchmarks/bench_studio.py --device cuda --size 1080p --frames 1000 --preset default
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict

import torch
import zmq

from streamstyle.engine_plugins.reference_engine import CameraPath, Renderer, Scene
from streamstyle.engine_plugins.reference_engine.gbuffers import to_slot
from streamstyle.interop.client import Client
from streamstyle.model.config import preset
from streamstyle.model.layout import reference_layout
from streamstyle.model.network import StreamStyleModel
from streamstyle.model.stylizer import Stylizer
from streamstyle.service.config import ServiceConfig
from streamstyle.service.server import Service
from streamstyle.tools.cli import parse_size


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(obj, name, into):
    fn = getattr(obj, name)

    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            into[name].append(time.perf_counter() - t0)

    setattr(obj, name, wrapper)


def run(args, studio: bool) -> dict:
    w, h = args.size
    tmp = tempfile.mkdtemp()
    ports = {}
    if studio:
        ports = dict(metrics_port=free_port(), osc_port=free_port(socket.SOCK_DGRAM), preview_port=free_port())
    cfg = ServiceConfig(bind=f"ipc://{tmp}/bench.sock", device=args.device, recordings_dir=f"{tmp}/rec", **ports)
    model = StreamStyleModel(preset(args.preset)).eval()
    svc = Service(cfg, Stylizer(model, device=args.device, cuda_graphs=args.device != "cpu"), context=zmq.Context.instance())
    hooks: dict[str, list] = defaultdict(list)
    if studio:
        timed(svc.metrics, "on_frame", hooks)
        timed(svc.preview, "wants", hooks)
        timed(svc.preview, "hand_over", hooks)
    timed(svc, "drain_controls", hooks)
    loop = threading.Thread(target=svc.run, daemon=True)
    loop.start()
    stop = threading.Event()
    helpers = []
    if studio:
        def scrape():
            while not stop.is_set():
                urllib.request.urlopen(f"http://127.0.0.1:{cfg.metrics_port}/metrics", timeout=5).read()
                stop.wait(0.5)

        def page():
            while not stop.is_set():
                urllib.request.urlopen(f"http://127.0.0.1:{cfg.preview_port}/frame.jpg", timeout=5).read()
                stop.wait(1 / 15)

        def osc():
            from pythonosc.udp_client import SimpleUDPClient

            c, i = SimpleUDPClient("127.0.0.1", cfg.osc_port), 0
            while not stop.is_set():
                c.send_message("/streamstyle/_/strength", 0.4 + 0.2 * (i % 2))
                i += 1
                stop.wait(1 / 30)

        helpers = [threading.Thread(target=f, daemon=True) for f in (scrape, page, osc)]
    scene = Scene.generate(5, objects=12)
    r = Renderer(scene, CameraPath("handheld", seed=5, extent=scene.extent), w, h, device=args.device)
    layout = reference_layout(w, h)
    frames = [to_slot(r.render(i), layout).cpu() for i in range(8)]
    backend = "cuda-ipc" if args.device != "cpu" else "shm"
    with Client(svc.address) as client:
        session = client.open_session(w, h, layout, backend=backend)
        recording = studio and importlib.util.find_spec("imageio_ffmpeg") is not None  # the video extra
        if recording:
            session.record(True)
            st = svc.sessions[session.id]
            timed(st.recorder, "offer", hooks)
        for t in helpers:
            t.start()
        totals = []
        for i in range(args.warmup + args.frames):
            slot = session.acquire_slot(timeout_s=30)
            dst = session.ring.input(slot)
            if torch.is_tensor(dst):
                dst.copy_(frames[i % len(frames)].to(dst.device))
            else:
                dst[:] = frames[i % len(frames)].numpy()
            ev = client.wait(session, session.submit(slot))
            if i >= args.warmup and ev.status == "done":
                totals.append(ev.timings["total_ms"])
        recorded = session.record(False) if recording else None
        session.close()
    stop.set()
    svc.stop()
    loop.join(30)
    n = len(totals)
    per_frame_us = {k: sum(v) / max(1, n) * 1e6 for k, v in hooks.items()}
    return {"studio": studio, "frames": n, "service_p50_ms": statistics.median(totals),
            "service_p99_ms": sorted(totals)[int(0.99 * (n - 1))],
            "hook_us_per_frame": {k: round(v, 2) for k, v in per_frame_us.items()},
            "hook_calls": {k: len(v) for k, v in hooks.items()},
            "hook_us_per_call_p50": {k: round(statistics.median(v) * 1e6, 2) for k, v in hooks.items() if v},
            "hook_us_per_call_p99": {k: round(sorted(v)[int(0.99 * (len(v) - 1))] * 1e6, 2) for k, v in hooks.items() if v},
            # drain_controls runs once per tick, idle ticks included: per frame, one call's p50 counts
            "studio_us_per_frame": round(sum(v for k, v in per_frame_us.items() if k != "drain_controls")
                                         + statistics.median(hooks["drain_controls"]) * 1e6, 2),
            "recorded": recorded}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=(320, 192))
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--json", help="write the report here")
    args = ap.parse_args()
    report = {"size": list(args.size), "device": args.device, "preset": args.preset,
              "off": run(args, studio=False), "on": run(args, studio=True)}
    print(json.dumps(report, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
