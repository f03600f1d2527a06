"""Where a training step's time goes: rendering a shot, the style oracles, the G-buffer planes, and
the model's forward + backward in each phase, at a given size and batch.

    python benchmarks/profile_train.py [--size 256] [--batch 16,32] [--frames 4] [--preset default]
        [--phases flow,few] [--skip-render] [--compile [--no-eager]] [--split] [--profile N]

`--profile N` lists, for each batch, the N kernels (and host-side ops) that took the most device
time in one step of its last phase (torch.profiler), with the device's busy time against the
step's wall time and its kernel launches.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from streamstyle.engine_plugins.reference_engine.gbuffers import to_planes
from streamstyle.engine_plugins.reference_engine.oracles import STYLES
from streamstyle.model.config import preset
from streamstyle.model.network import StreamStyleModel
from streamstyle.model.stylizer import null_context
from streamstyle.model.training.data import ClipBank, ReferenceClips
from streamstyle.model.training.trainer import compile_for_training
from streamstyle.model.training.objective import ObjectiveConfig, StepRandomness, batch_loss


def timed(fn, reps, sync):
    out, times = None, []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--batch", default="16")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--phases", default="flow,few", help="comma list of flow and few (the few-step phase)")
    ap.add_argument("--sampler-steps", default="1,2,4", help="the few-step phase's step counts")
    ap.add_argument("--skip-render", action="store_true", help="leave out the rendering rows")
    ap.add_argument("--compile", action="store_true",
                    help="time each batch again with the model compiled for training (`compile_for_training`)")
    ap.add_argument("--split", action="store_true",
                    help="time the step's forward, backward and optimizer apart: when each call returns to the "
                         "host and when the device is done with it (host-bound where the two are close)")
    ap.add_argument("--no-eager", action="store_true", help="with --compile: time the compiled model only")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="list the N largest ops of a step")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    src = ReferenceClips(args.size, args.size, args.frames, device=dev)
    rng = random.Random(0)
    rows = []
    if not args.skip_render:
        frames = src._shot(rng)
        rows.append(("render a shot (render_many)",
                     timed(lambda: src._shot(random.Random(rng.random())), args.reps, sync)[0]))
        rows.append(("all 9 oracles of a shot", timed(lambda: [fn(f) for fn in STYLES.values() for f in frames],
                                                      args.reps, sync)[0]))
        rows.append(("G-buffer planes of a shot", timed(lambda: [to_planes(f, src.layout) for f in frames],
                                                        args.reps, sync)[0]))
        rows.append(("ClipBank shot (all of the above)",
                     timed(lambda: src.shot(rng.randrange(10**6)), args.reps, sync)[0]))
    model = StreamStyleModel(preset(args.preset)).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bank = ClipBank(src, 16, refresh=10**9)
    auto = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    variants = ([] if args.compile and args.no_eager else [("eager", False)]) + ([("compiled", True)] if args.compile else [])
    for (variant, comp), b in ((v, int(x)) for v in variants for x in args.batch.split(",")):
        if comp and not getattr(model, "_compiled", False):
            compile_for_training(model)
            model._compiled = True
        clips = [bank.clip(i) for i in range(b)]
        ctx = [null_context(model, dev)] * b
        k = tuple(int(x) for x in args.sampler_steps.split(","))
        phases = {"flow": ("flow", ObjectiveConfig()),
                  "few": (f"few-step {k}", ObjectiveConfig(sampler_steps=k))}
        for name, obj in (phases[p] for p in args.phases.split(",")):
            def step():
                with auto:
                    loss, _ = batch_loss(model, clips, ctx, StepRandomness.seeded(1, 0, range(b)), obj)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            warm, _ = timed(step, 1, sync)  # warm up (a compiled model compiles here)
            timed(step, 1, sync)
            ms = timed(step, args.reps, sync)[0]
            rows.append((f"train step, {name}, {variant}, batch {b} x {args.frames} frames", ms))
            rows.append(("  -> its first step (compilation included)", warm))
            rows.append(("  -> model frames/s", b * args.frames / ms * 1e3))
            if args.split:
                for part, (host, whole) in split_step(model, clips, ctx, b, obj, opt, auto, sync, args.reps).items():
                    rows.append((f"  -> {part}: host returns after", host))
                    rows.append((f"  -> {part}: done after", whole))
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                step()
                rows.append(("  -> peak memory, MiB", torch.cuda.max_memory_allocated() / 2**20))
        if args.profile:
            profile(step, args.profile, sync, dev)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "CPU"
    print(f"\n{args.preset} preset, {args.size}x{args.size}, {name}")
    for label, value in rows:
        unit = "" if "frames/s" in label else " MiB" if "MiB" in label else " ms"
        print(f"{label:<60} {value:10.1f}{unit}")


def split_step(model, clips, ctx, b, obj, opt, auto, sync, reps) -> dict[str, tuple[float, float]]:
    """Median over `reps` steps of each part's (host ms, done ms): the time until the part's call
    returns, and until the device has finished it (a sync after each part, so parts do not overlap)."""
    times: dict[str, list[tuple[float, float]]] = {"forward": [], "backward": [], "optimizer": []}
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        with auto:
            loss, _ = batch_loss(model, clips, ctx, StepRandomness.seeded(1, 0, range(b)), obj)
        parts = [("forward", t, time.perf_counter())]
        sync()
        t = time.perf_counter()
        parts[0] = parts[0] + (t,)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        h = time.perf_counter()
        sync()
        parts.append(("backward", t, h, time.perf_counter()))
        t = time.perf_counter()
        opt.step()
        h = time.perf_counter()
        sync()
        parts.append(("optimizer", t, h, time.perf_counter()))
        for name, t0, host, done in parts:
            times[name].append(((host - t0) * 1e3, (done - t0) * 1e3))
    return {k: (statistics.median(h for h, _ in v), statistics.median(d for _, d in v)) for k, v in times.items()}


def profile(step, top: int, sync, dev) -> None:
    """One step under torch.profiler: its wall time, the device's busy time (the sum of its kernels'
    times, which do not overlap on one stream) and the `top` ops by device (or host) time."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    sync()
    with torch_profile(activities=acts) as prof:
        t = time.perf_counter()
        step()
        sync()
        wall = (time.perf_counter() - t) * 1e3
    events = prof.key_averages()
    key = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    busy = sum(getattr(e, key, 0) for e in events) / 1e3
    launches = sum(e.count for e in events if e.key.startswith(("cudaLaunchKernel", "cuLaunchKernel")))
    print(f"\nprofiled step: wall {wall:.1f} ms, device busy {busy:.1f} ms ({busy / wall:.0%}), "
          f"{launches} kernel launches")
    print(events.table(sort_by=key, row_limit=top, max_name_column_width=60))


if __name__ == "__main__":
    main()
