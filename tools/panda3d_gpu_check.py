"""Panda3D on a GPU, handing its frames to a real service: the engine renders the demo scene
(DamagedHelmet, movers, flythrough) through EGL at each size, its G-buffer targets are read back,
packed into a host copy of the slot and copied into the ring slot with torch, and the service in a
child process stylizes them. Prints per size: the engine's render time (Panda3D's `renderFrame`, the
read-back of the targets to host memory included, as `RTMCopyRam` does it), turning the read-back
into planes, packing the slot, the host-to-device copy into the ring (cuda-ipc), and the service's
total and model time from its DONE timings, plus the engine's round trip.

Runs the CPU path too (Mesa llvmpipe, the shm ring: the planes are packed straight into the ring,
nothing to copy), which is how CI knows the script works apart from the GPU parts.

    python -m streamstyle.tools.panda3d_gpu_check --backend cuda-ipc --device cuda --egl-device 0 \
        --sizes 1280x720,1920x1080 --frames 60 --json out.json

Frames are sent one at a time and waited for (a measurement, not a game loop: the plugin never
waits, engine_plugins/panda3d/link.py).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


class ServiceProcess:
    """`streamstyle serve` in a child process; `stop()` ends it (SIGTERM, then kill)."""

    def __init__(self, address: str, device: str, weights: str | None, prompts: bool, workdir: Path):
        ready = workdir / "service-ready"
        cmd = [sys.executable, "-m", "streamstyle", "serve", "--bind", address, "--device", device, "--quiet",
               "--ready-file", str(ready)]
        if weights:
            cmd += ["--weights", weights]
        if not prompts:
            cmd.append("--no-prompts")
        self.log = open(workdir / "service.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        end = time.monotonic() + 300
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited ({self.proc.returncode}):\n"
                                   + (workdir / "service.log").read_text()[-3000:])
            if time.monotonic() > end:
                self.stop()
                raise RuntimeError("the service did not start within 300 s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _copier(session, backend: str):
    """(pack, copy) for this ring: pack writes a read frame into host slot memory (numpy), copy moves
    it into ring slot `slot` and returns once it is there (torch, synchronised: measured)."""
    if backend == "shm":
        return (lambda gpass, f, slot: gpass.write_slot(f, session.planes(slot))), (lambda slot: None)
    import torch

    nbytes = session.layout.slot_bytes(session.width, session.height)
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)  # the engine's staging copy of a slot
    views = session.layout.view_numpy(host.numpy(), session.width, session.height)

    def copy(slot):
        session.ring.input(slot).copy_(host, non_blocking=True)
        torch.cuda.current_stream().synchronize()

    return (lambda gpass, f, slot: gpass.write_slot(f, views)), copy


def measure(base, client, scene: str, size: tuple[int, int], frames: int, warmup: int, backend: str,
            fps: float = 30.0) -> dict:
    from ..engine_plugins.panda3d.gbuffer import GBufferPass
    from ..engine_plugins.panda3d.scenes import build_scene

    w, h = size
    world = build_scene(base, scene)
    gpass = GBufferPass(base, w, h)
    session = client.open_session(w, h, gpass.layout, backend=backend)
    pack, copy = _copier(session, backend)
    rows = {k: [] for k in ("render_ms", "read_ms", "pack_ms", "copy_ms", "service_ms", "model_ms", "round_trip_ms")}
    errors, nonfinite = [], 0
    try:
        for i in range(warmup + frames):
            world.pose(base, i, fps)
            gpass.begin_frame(cut=i == 0)
            t0 = time.perf_counter()
            base.graphicsEngine.renderFrame()
            t1 = time.perf_counter()
            f = gpass.read()
            t2 = time.perf_counter()
            slot = session.acquire_slot(timeout_s=30)
            t3 = time.perf_counter()
            pack(gpass, f, slot)
            t4 = time.perf_counter()
            copy(slot)
            t5 = time.perf_counter()
            seq = session.submit(slot, view=f.view, proj=f.proj, dt=1 / fps)
            ev = client.wait(session, seq, timeout_s=120)
            t6 = time.perf_counter()
            nonfinite += f.nonfinite
            if ev.status != "done":
                errors.append(f"{ev.status}: {ev.reason} {ev.message or ''}".strip())
                continue
            if i < warmup:
                continue
            tm = ev.timings or {}
            for key, value in (("render_ms", t1 - t0), ("read_ms", t2 - t1), ("pack_ms", t4 - t3), ("copy_ms", t5 - t4),
                               ("round_trip_ms", t6 - t5)):
                rows[key].append(value * 1e3)
            rows["service_ms"].append(float(tm.get("total_ms", float("nan"))))
            rows["model_ms"].append(float(tm.get("model_ms", float("nan"))))
    finally:
        session.close()
        gpass.destroy()
        world.root.removeNode()
    out = {"size": [w, h], "frames": len(rows["render_ms"]), "errors": errors[:5], "error_count": len(errors),
           "nonfinite": nonfinite}
    for key, xs in rows.items():
        out[key] = {"p50": _pct(xs, 50), "p99": _pct(xs, 99)}
    return out


def format_table(report: dict) -> str:
    cols = [("render_ms", "engine render"), ("read_ms", "read"), ("pack_ms", "pack"), ("copy_ms", "H2D copy"),
            ("service_ms", "service"), ("model_ms", "model"), ("round_trip_ms", "round trip")]
    head = f"{'size':<10}{'frames':>7}" + "".join(f"{name:>22}" for _, name in cols)
    lines = [f"{report['renderer']} | scene {report['scene']} | backend {report['backend']} | service on {report['device']}",
             "ms, p50 / p99", head]
    for r in report["rows"]:
        line = f"{r['size'][0]}x{r['size'][1]:<5}{r['frames']:>7}"
        line += "".join(f"{r[k]['p50']:>13.2f} / {r[k]['p99']:>6.2f}" for k, _ in cols)
        if r["error_count"]:
            line += f"   {r['error_count']} frames not done: {r['errors'][0]}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="panda3d_gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1280x720,1920x1080")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--scene", default="auto",
                    help="a scene spec (engine_plugins/panda3d/scenes.py); auto: helmet if its asset is found, else "
                         "Panda3D's own panda model (the GPU machine gets no shared assets)")
    ap.add_argument("--backend", default="cuda-ipc", choices=("cuda-ipc", "shm"))
    ap.add_argument("--device", default="cuda", help="the service's device")
    ap.add_argument("--egl-device", type=int, default=None, help="EGL device index (0: the first GPU); none: default")
    ap.add_argument("--weights", help="the service's model (default: the shipped one)")
    ap.add_argument("--prompts", action="store_true", help="load the text encoder in the service (default: no prompts)")
    ap.add_argument("--expect-renderer", default="",
                    help="fail unless the GL renderer's name holds this (e.g. NVIDIA: not a fallback to llvmpipe)")
    ap.add_argument("--json", help="write the report here")
    args = ap.parse_args(argv)
    sizes = [_size(s) for s in args.sizes.split(",") if s]

    from ..engine_plugins.panda3d.headless import headless_base
    from ..interop.client import Client

    if args.scene == "auto":
        from ..engine_plugins.panda3d.scenes import find_asset

        args.scene = "helmet" if find_asset("helmet") is not None else "panda"
    work = Path(tempfile.mkdtemp(prefix="ss-p3d-check-"))
    address = f"ipc://{work}/service.sock"
    service = ServiceProcess(address, args.device, args.weights, args.prompts, work)
    base = None
    try:
        base = headless_base(64, 64, egl_device=args.egl_device)  # the G-buffer pass has its own buffer per size
        gsg = base.win.getGsg()
        renderer = f"{gsg.getDriverVendor()} {gsg.getDriverRenderer()}, GL {gsg.getDriverVersion()}"
        print(f"Panda3D renders on: {renderer}", flush=True)
        if args.expect_renderer and args.expect_renderer.lower() not in renderer.lower():
            raise SystemExit(f"the GL renderer is {renderer!r}, not {args.expect_renderer}: EGL did not reach the GPU "
                             "(the .gl loader unpacked? __EGL_VENDOR_LIBRARY_FILENAMES?)")
        with Client(address, timeout_s=60) as client:
            rows = []
            for size in sizes:
                rows.append(measure(base, client, args.scene, size, args.frames, args.warmup, args.backend))
                print(f"{size[0]}x{size[1]}: {rows[-1]['frames']} frames", flush=True)
    finally:
        if base is not None:
            base.destroy()
        service.stop()
    report = {"renderer": renderer, "backend": args.backend, "device": args.device, "scene": args.scene, "rows": rows,
              "service_log": str(work / "service.log")}
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if all(r["frames"] and not r["error_count"] and not r["nonfinite"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
