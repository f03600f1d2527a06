"""Aggregate serving throughput on one GPU and on every visible GPU: `serve --gpus ...` (a front and
one worker per GPU), two sessions per GPU (each its own engine process with a CUDA IPC ring on
that GPU), 1920x1080 by default.

For each GPU count (1, then all visible; only 1 on a one-GPU machine) it starts the service, checks
correctness first (one session per GPU, the same seed and frames: every GPU's output equals GPU 0's
to within one RGBA8 step, and GPU 0's equals what the 1-GPU service gave), then starts the engine
processes, which render their frames once on their GPU and submit in lockstep (one frame in flight
per session: with two sessions a worker always has the next frame queued) for --seconds, counted
from a common start after a warm-up. Prints, per GPU count: frames done per second over all
sessions, per GPU, scaling efficiency against the 1-GPU run, latency p50/p99 (submit to done, as
the engine sees it), late frames.

    python benchmarks/bench_multi_gpu.py --size 1080p --sessions-per-gpu 2 --seconds 20

Engine processes run this file with --engine (not for direct use).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

WARMUP_FRAMES = 30


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def render_slots(w: int, h: int, device: str, n: int = 4) -> list[torch.Tensor]:
    from streamstyle.engine_plugins.reference_engine import CameraPath, Renderer, Scene
    from streamstyle.engine_plugins.reference_engine.gbuffers import to_slot
    from streamstyle.model.layout import reference_layout

    scene = Scene.generate(3)
    renderer = Renderer(scene, CameraPath("handheld", seed=3, extent=scene.extent), w, h, device=device)
    layout = reference_layout(w, h)
    return [to_slot(renderer.render(i), layout) for i in range(n)]


def run_frame(client, session, slot_data: torch.Tensor):
    slot = session.acquire_slot(timeout_s=30)
    torch.as_tensor(session.ring.input(slot)).copy_(slot_data)  # `ready` is recorded after it, on this stream
    t0 = time.perf_counter()
    ev = client.wait(session, session.submit(slot), timeout_s=60)
    return ev, (time.perf_counter() - t0) * 1000


def engine(args) -> None:
    """One session on GPU --gpu: warm up, wait for the common start, run --seconds, write JSON."""
    from streamstyle.interop.client import Client
    from streamstyle.model.layout import reference_layout

    t0 = time.time()
    w, h = args.width, args.height
    if args.cpu:
        slots, backend = render_slots(w, h, "cpu"), "shm"
    else:
        torch.cuda.set_device(args.gpu)
        slots, backend = render_slots(w, h, f"cuda:{args.gpu}"), "cuda-ipc"
    client = Client(args.address, name=f"bench-gpu{args.gpu}", timeout_s=120)
    session = client.open_session(w, h, reference_layout(w, h), backend=backend, device=max(0, args.gpu),
                                  params={"steps": args.steps}, seed=args.seed)
    opened = time.time()
    for i in range(WARMUP_FRAMES):
        run_frame(client, session, slots[i % len(slots)])
    ready_at = time.time()
    print(f"engine on GPU {args.gpu}: rendered and opened in {opened - t0:.1f} s, warm-up frames {ready_at - opened:.1f} s, "
          f"{args.start_at - ready_at:.1f} s to spare", file=sys.stderr, flush=True)
    while time.time() < args.start_at:
        client.poll(timeout_ms=5)
    done, late, lat, i = 0, 0, [], 0
    end = args.start_at + args.seconds
    while time.time() < end:
        ev, ms = run_frame(client, session, slots[i % len(slots)])
        i += 1
        if ev.status == "done" and not ev.late:
            done += 1
            lat.append(ms)
        else:
            late += 1
    worker = session.stats().get("worker")
    session.close()
    client.close()
    Path(args.out).write_text(json.dumps({"gpu": args.gpu, "worker": worker, "done": done, "late": late,
                                          "ready_at": ready_at, "latencies_ms": lat}))


def check(address: str, gpus: list[int], w: int, h: int, steps: int, slots_by_gpu: dict,
          cpu: bool) -> dict[int, torch.Tensor]:
    """One session per GPU, same seed and frames: the outputs of the last frame, per GPU."""
    from streamstyle.interop.client import Client
    from streamstyle.model.layout import reference_layout

    out = {}
    client = Client(address, name="bench-check", timeout_s=120)
    for g in gpus:
        if not cpu:
            torch.cuda.set_device(g)
        s = client.open_session(w, h, reference_layout(w, h), backend="shm" if cpu else "cuda-ipc", device=g,
                                params={"steps": steps}, seed=1)
        for data in slots_by_gpu[g]:
            ev, _ = run_frame(client, s, data)
            if ev.status != "done":
                raise SystemExit(f"correctness check: GPU {g}'s frame was {ev.status} ({ev.reason} {ev.message})")
        out[g] = torch.as_tensor(s.output(ev.slot)).clone().cpu()
        s.close()
    client.close()
    return out


def serve_args(args, gpus: list[int]) -> list[str]:
    if args.weights:
        model = ["--weights", args.weights]
    elif args.preset:
        model = ["--preset", args.preset]
    else:
        from streamstyle.model.weights import shipped_weights

        model = ["--weights", str(shipped_weights())] if shipped_weights() else ["--preset", "default"]
    where = ["--workers", str(len(gpus)), "--device", "cpu"] if args.cpu else ["--gpus", ",".join(map(str, gpus))]
    # On the CPU every worker takes one core, whatever the count, so that the runs compare.
    where += ["--cpu-threads", "1"] if args.cpu else []
    return [*where, *model, "--no-prompts", "--quiet", "--deadline-ms", "5000" if args.cpu else "1000"]


def measure(args, gpus: list[int], reference: torch.Tensor | None) -> tuple[dict, torch.Tensor]:
    from streamstyle.tools.launch import child_service

    w, h = args.width, args.height
    with child_service(serve_args(args, gpus)) as address:
        slots_by_gpu = {g: render_slots(w, h, "cpu" if args.cpu else f"cuda:{g}", n=3) for g in gpus}
        outs = check(address, gpus, w, h, args.steps, slots_by_gpu, args.cpu)
        base = outs[gpus[0]]
        for g, o in outs.items():
            diff = (o.int() - base.int()).abs().max().item()
            if diff > 1:
                raise SystemExit(f"correctness check: GPU {g}'s output differs from GPU {gpus[0]}'s by {diff} steps")
        if reference is not None:
            diff = (base.int() - reference.int()).abs().max().item()
            if diff > 1:
                raise SystemExit(f"correctness check: GPU 0 under {len(gpus)} workers differs from the 1-GPU run by {diff}")
        work = Path(tempfile.mkdtemp(prefix="bench-multi-gpu-"))
        start_at = time.time() + args.warmup_s
        procs = []
        for g in gpus:
            for k in range(args.sessions_per_gpu):
                out = work / f"gpu{g}-{k}.json"
                procs.append((out, subprocess.Popen(
                    [sys.executable, __file__, "--engine", "--address", address, "--gpu", str(g), "--width", str(w),
                     "--height", str(h), "--steps", str(args.steps), "--seconds", str(args.seconds),
                     "--start-at", repr(start_at), "--seed", str(k), "--out", str(out),
                     *(["--cpu", "1"] if args.cpu else [])])))
        for out, p in procs:
            if p.wait(args.warmup_s + args.seconds + 300) != 0:
                raise SystemExit(f"an engine process failed (exit {p.returncode})")
        rows = [json.loads(out.read_text()) for out, _ in procs]
    slow = [r["gpu"] for r in rows if r["ready_at"] > start_at]
    if slow:
        raise SystemExit(f"engines on GPUs {slow} were not warm by the common start (ready {max(r['ready_at'] for r in rows) - start_at:.1f} s after it): give a longer --warmup-s")
    lat = [x for r in rows for x in r["latencies_ms"]]
    done = sum(r["done"] for r in rows)
    per_worker = {}
    for r in rows:
        per_worker[r["worker"]] = per_worker.get(r["worker"], 0) + r["done"]
    result = {"gpus": len(gpus), "sessions": len(rows), "fps": done / args.seconds, "fps_per_gpu": done / args.seconds / len(gpus),
              "latency_p50_ms": statistics.median(lat) if lat else float("nan"), "latency_p99_ms": pct(lat, 0.99),
              "late": sum(r["late"] for r in rows), "frames_per_worker": per_worker}
    return result, base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1080p")
    ap.add_argument("--sessions-per-gpu", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup-s", type=float, default=60.0, help="time the engines get to render, open and warm up")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--weights", help="a checkpoint (default: the shipped default model)")
    ap.add_argument("--preset", help="untrained weights of this preset (default: the shipped default model)")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--cpu", type=int, default=0, metavar="N",
                    help="a smoke run of this script on N CPU workers with shm rings (no GPU; figures mean nothing)")
    ap.add_argument("--engine", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--address", help=argparse.SUPPRESS)
    ap.add_argument("--gpu", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--width", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--height", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine:
        engine(args)
        return
    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("bench_multi_gpu needs CUDA GPUs (--cpu N: a smoke run of the script on N CPU workers)")
    from streamstyle.tools.cli import parse_size

    args.width, args.height = parse_size(args.size)
    n = args.cpu or torch.cuda.device_count()
    counts = [1] if n == 1 else [1, n]
    rows, reference = [], None
    for count in counts:
        row, out = measure(args, list(range(count)), reference)
        reference = out if reference is None else reference
        rows.append(row)
        print(json.dumps(row), flush=True)
    one = rows[0]["fps"]
    card = "CPU (smoke run)" if args.cpu else torch.cuda.get_device_name(0)
    ring = "shared-memory ring" if args.cpu else "CUDA IPC ring on its GPU"
    print(f"\nServing on {card} x{n} visible, {args.width}x{args.height}, {args.steps} steps, "
          f"{args.sessions_per_gpu} sessions per GPU (each its own engine process, {ring}), "
          f"{args.seconds:g} s; correctness checked first (outputs equal across GPUs and GPU counts)")
    print(f"{'gpus':>4} {'sessions':>8} {'fps':>8} {'fps/gpu':>8} {'scaling':>8} {'p50 ms':>7} {'p99 ms':>7} {'late':>5}")
    for r in rows:
        eff = r["fps"] / (one * r["gpus"]) if one else float("nan")
        print(f"{r['gpus']:>4} {r['sessions']:>8} {r['fps']:>8.1f} {r['fps_per_gpu']:>8.1f} {eff:>7.0%} "
              f"{r['latency_p50_ms']:>7.2f} {r['latency_p99_ms']:>7.2f} {r['late']:>5}")
    if args.json:
        Path(args.json).write_text(json.dumps({"card": card, "visible": n, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
