"""Where a frame's GPU time goes: the per-frame step under the PyTorch profiler, kernel by kernel.

Runs the eager step (same kernels as the graph, kernel backend `auto`) of the shipped model in one
dtype and prints the kernels that take the most device time per frame, grouped by name, with the
sum of all kernels against the graphed step's measured time. `--compile` also times the graphed step
with the DiT under `torch.compile` (inductor's fused kernels inside the same CUDA graph), to see
what fusion alone is worth before writing it by hand.

    python benchmarks/profile_step.py --size 1920x1088 --steps 2 --top 30

`--host-path` instead times, per size (by default 1280x720, 1920x1080, 1920x1088 and 3840x2160),
one frame at a time as the service runs them: the graph's replay alone, the whole step
(`Stylizer.step_into` an RGBA8 slot, finiteness tested), and their difference, which is what runs
outside the replay (the slot's copy in, the noise draw, the output's copy, and the host time of
their launches, the device idle meanwhile). On the CPU (`--device cpu --preset tiny`) the graph's
body runs uncaptured: a check that the script runs, not a timing.

    python benchmarks/profile_step.py --host-path
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from streamstyle.model.cache import CacheConfig
from streamstyle.model.frame import FrameParams, padded_size, stylize_frame
from streamstyle.model.graph import FrameGraph
from streamstyle.model.layout import reference_layout
from streamstyle.model.state import StateSpec
from streamstyle.model.stylizer import null_context
from streamstyle.model.weights import load_weights, shipped_weights
from streamstyle.tools.bench import Timer, cast_model, random_slot
from streamstyle.tools.cli import parse_size


def graph_time(model, layout, w, h, steps, device, slot, reps=50) -> float:
    spec = StateSpec(model.config, *padded_size(model.config, w, h))
    pool = torch.zeros(CacheConfig().pages_for(spec.numel) + 1, CacheConfig().page_elems, device=device)
    g = FrameGraph(model, layout, w, h, steps, device, pool)
    ctx = null_context(model, device)
    table = torch.arange(1, pool.shape[0], device=device)  # every page but the null one
    noise = torch.randn(g.spec.shapes()["latent"], device=device)
    timer = Timer(device)
    for _ in range(3):
        g.run(slot, table, noise, ctx, 0.5, False)
    return statistics.median(timer(lambda: g.graph.replay()) for _ in range(reps))


def lockstep(model, layout, w, h, steps, device, slots, frames: int = 200) -> dict[str, dict[str, float]]:
    """A frame as the service runs it, one at a time with the device idle in between (the service
    answers each frame before the next comes): `Stylizer.step_into` an RGBA8 slot, then a wait.
    Per variant, medians of: `enqueue_ms` (host time of the call), `events_ms` (device events
    around the call, which is what the service reports as model time) and `wall_ms` (call to the
    end of the wait). Variants: the graph's replay alone; the step without a finiteness test; with
    the test inside the graph (shipped); with the test as a host read before the replay (v0.4);
    and the test's device time alone, three ways."""
    from streamstyle.kernels.finite import all_finite, all_finite_reference
    from streamstyle.kernels.writeback import output_bytes
    from streamstyle.model.stylizer import Stylizer

    out = torch.empty(output_bytes(w, h, "rgba8"), dtype=torch.uint8, device=device)
    float_planes = [n for n, v in layout.view(slots[0], w, h).items() if v.is_floating_point()]

    def host_check(slot):
        views = layout.view(slot, w, h)
        bool(all_finite_reference([views[n] for n in float_planes]))

    def measure(fn) -> dict[str, float]:
        rows = []
        for i in range(frames + 5):
            torch.cuda.synchronize(device)
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            a.record()
            fn(slots[i % len(slots)])
            b.record()
            t1 = time.perf_counter()
            b.synchronize()
            t2 = time.perf_counter()
            if i >= 5:
                rows.append(((t1 - t0) * 1e3, a.elapsed_time(b), (t2 - t0) * 1e3))
        return {k: statistics.median(r[j] for r in rows) for j, k in enumerate(("enqueue_ms", "events_ms", "wall_ms"))}

    result = {}
    for name, check, before in (("step, no test", False, False), ("step, test in graph", True, False),
                                ("step, host test first", False, True)):
        sty = Stylizer(model, device=device, cuda_graphs=True, check_finite=check)
        s = sty.open_session(w, h, layout, seed=1)
        sty.warm_up(s, steps, out_format="rgba8")
        params = FrameParams(steps=steps)

        def fn(slot, sty=sty, s=s, before=before):
            if before:
                host_check(slot)
            sty.step_into(s, slot, out, "rgba8", params)

        if not result:
            g = sty._graphs[(layout, w, h, steps, "rgba8")]
            result["graph replay only"] = measure(lambda slot: g.graph.replay())
        result[name] = measure(fn)
        sty.close_session(s)
    views = layout.view(slots[0], w, h)
    nan = float("nan")
    for name, test in (("test alone: isfinite.all", lambda: all_finite_reference([views[n] for n in float_planes])),
                       ("test alone: aminmax", lambda: torch.isfinite(torch.stack([torch.stack(torch.aminmax(views[n])).float()
                                                                                   for n in float_planes])).all()),
                       ("test alone: all_finite", lambda: all_finite([views[n] for n in float_planes]))):
        result[name] = {"enqueue_ms": nan, "events_ms": kernel_ms(test, device), "wall_ms": nan}
    return result


HOST_PATH_SIZES = ((1280, 720), (1920, 1080), (1920, 1088), (3840, 2160))


def host_path(model, w, h, steps, device, frames: int = 200) -> dict[str, float]:
    """Frames one at a time (a wait after each, as the service answers each frame before the next):
    device-event ms, p50 and p99, of the graph's replay alone and of the whole step into an RGBA8
    slot; their p50 difference; the step's host enqueue time p50; and the session's state bytes."""
    from streamstyle.kernels.writeback import output_bytes
    from streamstyle.model.stylizer import Stylizer

    cuda = device.type == "cuda"
    layout = reference_layout(w, h)
    gen = torch.Generator().manual_seed(0)
    slots = [random_slot(layout, w, h, device, gen) for _ in range(3)]  # rotate, as a ring does
    out = torch.empty(output_bytes(w, h, "rgba8"), dtype=torch.uint8, device=device)
    spec = StateSpec(model.config, *padded_size(model.config, w, h))
    cache = CacheConfig(num_pages=CacheConfig().pages_for(spec.numel) + 1)
    sty = Stylizer(model, device=device, cuda_graphs=True, cache=cache)
    sty.cuda_graphs = True  # on the CPU: the graph's body, uncaptured
    s = sty.open_session(w, h, layout, seed=1)
    params = FrameParams(steps=steps)
    sty.step_into(s, slots[0], out, "rgba8", params)  # captures the graph (on a GPU), binds the session
    graph = sty._graphs[(layout, w, h, steps, "rgba8")]
    replay = graph.graph.replay if cuda else graph.replay

    def measure(fn):
        rows = []
        for i in range(frames + 5):
            if cuda:
                torch.cuda.synchronize(device)
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
            t0 = time.perf_counter()
            fn(slots[i % 3])
            t1 = time.perf_counter()
            if cuda:
                b.record()
                b.synchronize()
            if i >= 5:
                rows.append((a.elapsed_time(b) if cuda else (t1 - t0) * 1e3, (t1 - t0) * 1e3))
        ms = sorted(r[0] for r in rows)
        return statistics.median(ms), ms[min(len(ms) - 1, int(0.99 * len(ms)))], statistics.median(r[1] for r in rows)

    r50, r99, _ = measure(lambda slot: replay())
    s50, s99, enq = measure(lambda slot: sty.step_into(s, slot, out, "rgba8", params))
    sty.close_session(s)
    return {"replay_p50_ms": r50, "replay_p99_ms": r99, "step_p50_ms": s50, "step_p99_ms": s99,
            "outside_replay_ms": s50 - r50, "step_enqueue_ms": enq, "state_bytes": spec.nbytes}


def kernel_ms(fn, device, calls: int = 20) -> float:
    """Device time of one call of `fn`: `calls` calls captured in a CUDA graph and replayed, so
    that launch overhead (tens of microseconds for a Triton launch from Python) is not measured."""
    for _ in range(3):
        fn()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream(device).wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(calls):
            fn()
    timer = Timer(device)
    return statistics.median(timer(g.replay) for _ in range(10)) / calls


def sweep(module, names: tuple[str, ...], configs, run, device, label=str) -> dict:
    """Time `run` with each config's values set as `module`'s tile constants `names`, restoring the
    shipped values afterwards. Returns {label(config) or "shipped": ms per call}; the shipped
    config is timed first."""
    shipped = tuple(getattr(module, n) for n in names)
    out = {}
    try:
        for values in [shipped] + [c for c in configs if c != shipped]:
            for n, v in zip(names, values):
                setattr(module, n, v)
            out["shipped" if values == shipped else label(values)] = kernel_ms(run, device)
    finally:
        for n, v in zip(names, shipped):
            setattr(module, n, v)
    return out


def sweep_linear_attention(model, w, h, device) -> dict[int, float]:
    from streamstyle.kernels.linear_attention import triton_kernel as lk

    cfg = model.config
    dt = next(model.parameters()).dtype
    t = (h // cfg.patch) * (w // cfg.patch)
    q, k, v = (torch.randn(1, t, cfg.heads, cfg.head_dim, device=device, dtype=dt).transpose(1, 2) for _ in range(3))
    kv = torch.zeros(1, cfg.heads, cfg.head_dim, cfg.head_dim, device=device)
    ks = torch.zeros(1, cfg.heads, cfg.head_dim, device=device)
    decay = torch.full((cfg.heads,), 0.9, device=device)
    return sweep(lk, ("CHUNK_BLOCKS",), [(b,) for b in (1, 2, 4, 8, 16)],
                 lambda: lk.linear_attention_triton(q, k, v, kv, ks, decay, 1e-6), device, label=lambda c: c[0])


def sweep_mixffn(model, w, h, device) -> dict[str, float]:
    from streamstyle.kernels.mixffn import triton_kernel as mk

    cfg = model.config
    dt = next(model.parameters()).dtype
    th, tw = h // cfg.patch, w // cfg.patch
    ffn = model.dit.blocks[0].ffn
    e = torch.randn(1, th * tw, 2 * cfg.hidden, device=device, dtype=dt)
    configs = [(bw, bc, rows, nw) for bw in (4, 8, 16) for bc in (64, 128) for rows in (4, 8, 17, 34)
               for nw in (4, 8)]
    return sweep(mk, ("BLOCK_W", "BLOCK_C", "ROWS", "NUM_WARPS"), configs,
                 lambda: mk.dwconv_gate_triton(e, (th, tw), ffn.dw.weight, ffn.dw.bias), device,
                 label=lambda c: f"{c[0]}x{c[1]}x{c[2]}/{c[3]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, action="append")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--preset", help="an untrained preset instead of the shipped weights")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--compile", action="store_true", help="also time the graph with the DiT under torch.compile")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sweep-mixffn", action="store_true",
                    help="also time the Mix-FFN conv + gate kernel at each tile, strip height and warp count")
    ap.add_argument("--sweep-linattn", action="store_true",
                    help="also time the linear-attention kernels at each chunk size of the partial sums")
    ap.add_argument("--lockstep", action="store_true",
                    help="also time whole frames one at a time as the service runs them (host and device time)")
    ap.add_argument("--host-path", action="store_true",
                    help="only time the graph's replay against the whole step, one frame at a time, per size")
    ap.add_argument("--frames", type=int, default=200, help="frames timed per variant with --host-path")
    ap.add_argument("--json")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.preset:
        from streamstyle.model.config import preset
        from streamstyle.model.network import StreamStyleModel

        model = StreamStyleModel(preset(args.preset)).to(device)
    else:
        model = load_weights(shipped_weights(), device=device)
    model = cast_model(model.eval(), args.dtype)
    cfg = model.config
    gen = torch.Generator().manual_seed(0)
    report = []
    if args.host_path:
        print(f"frames one at a time, {args.steps} steps, {args.dtype}, RGBA8 out; device-event ms")
        print(f"{'size':>10} {'replay p50':>11} {'p99':>7} {'step p50':>9} {'p99':>7} {'outside':>8} "
              f"{'enqueue':>8} {'state MB':>9}")
        for w, h in args.size or HOST_PATH_SIZES:
            r = host_path(model, w, h, args.steps, device, args.frames)
            report.append({"size": f"{w}x{h}", "steps": args.steps, "dtype": args.dtype, **r})
            print(f"{w}x{h:<5} {r['replay_p50_ms']:>11.3f} {r['replay_p99_ms']:>7.3f} {r['step_p50_ms']:>9.3f} "
                  f"{r['step_p99_ms']:>7.3f} {r['outside_replay_ms']:>8.3f} {r['step_enqueue_ms']:>8.3f} "
                  f"{r['state_bytes'] / 1e6:>9.2f}")
        print(f"card: {torch.cuda.get_device_name(device) if cuda else 'CPU (graph body uncaptured: not a timing)'}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
        return
    for w, h in args.size or [(1920, 1088)]:
        layout = reference_layout(w, h)
        slot = random_slot(layout, w, h, device, gen)
        spec = StateSpec(cfg, *padded_size(cfg, w, h))
        state = spec.unflatten(torch.zeros(spec.numel, device=device))
        noise = torch.randn(spec.shapes()["latent"], device=device)
        ctx = null_context(model, device)
        strength = torch.full((1,), 0.5, device=device)  # as the graph holds them
        cut = torch.zeros(1, device=device)

        @torch.no_grad()
        def frame():
            planes = {k: v.unsqueeze(0) for k, v in layout.view(slot, w, h).items()}
            return stylize_frame(model, layout, planes, w, h, ctx, state, noise,
                                 FrameParams(steps=args.steps, strength=strength, reset=cut))

        for _ in range(3):
            frame()
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        sync()
        reps = 5
        activity = torch.profiler.ProfilerActivity.CUDA if cuda else torch.profiler.ProfilerActivity.CPU
        with torch.profiler.profile(activities=[activity]) as prof:
            for _ in range(reps):
                frame()
            sync()
        kernels: dict[str, list[float]] = {}
        kind = torch.autograd.DeviceType.CUDA if cuda else torch.autograd.DeviceType.CPU
        for ev in prof.events():
            if ev.device_type == kind and (cuda or not ev.cpu_children):  # on the CPU: leaf ops
                kernels.setdefault(ev.name, []).append(ev.device_time if cuda else ev.self_cpu_time_total)
        rows = sorted(((sum(v) / reps, len(v) / reps, k) for k, v in kernels.items()), reverse=True)
        total = sum(r[0] for r in rows)
        graphed = graph_time(model, layout, w, h, args.steps, device, slot) if cuda else float("nan")
        entry = {"size": f"{w}x{h}", "steps": args.steps, "dtype": args.dtype, "kernel_sum_ms": total / 1e3,
                 "kernels_per_frame": sum(r[1] for r in rows), "graph_ms": graphed,
                 "top": [{"name": k, "us_per_frame": t, "calls": n} for t, n, k in rows[:args.top]]}
        print(f"\n{w}x{h}, {args.steps} steps, {args.dtype}: kernel time {total / 1e3:.2f} ms per frame in "
              f"{entry['kernels_per_frame']:.0f} kernels; graphed step {graphed:.2f} ms")
        print(f"{'us/frame':>9} {'share':>6} {'calls':>6}  kernel")
        for t, n, k in rows[:args.top]:
            print(f"{t:>9.1f} {t / total:>6.1%} {n:>6.0f}  {k[:110]}")
        if args.compile and cuda:
            t0 = time.perf_counter()
            eager_forward = model.dit.forward
            model.dit.forward = torch.compile(eager_forward, dynamic=False)
            try:
                compiled = graph_time(model, layout, w, h, args.steps, device, slot)
            finally:
                model.dit.forward = eager_forward
            entry["compiled_graph_ms"] = compiled
            print(f"DiT under torch.compile, graphed step: {compiled:.2f} ms (compile + capture "
                  f"{time.perf_counter() - t0:.0f} s)")
        if args.sweep_linattn and cuda:
            entry["linattn_ms"] = sweep_linear_attention(model, w, h, device)
            print("linear attention by token blocks per partial sum: "
                  + ", ".join(f"{b}: {ms * 1e3:.1f} us" for b, ms in entry["linattn_ms"].items()))
        if args.sweep_mixffn and cuda:
            entry["mixffn_ms"] = sweep_mixffn(model, w, h, device)
            best = sorted(entry["mixffn_ms"].items(), key=lambda kv: kv[1])
            print("mixffn kernel by (tokens x channels, warps): " + ", ".join(f"{k}: {ms * 1e3:.1f} us" for k, ms in best[:8])
                  + f"; shipped {entry['mixffn_ms']['shipped'] * 1e3:.1f} us")
        if args.lockstep and cuda:
            slots = [slot] + [random_slot(layout, w, h, device, gen) for _ in range(2)]
            entry["lockstep"] = lockstep(model, layout, w, h, args.steps, device, slots)
            print(f"frames one at a time ({w}x{h}, RGBA8 out), medians in ms:")
            print(f"{'':>24} {'host enqueue':>13} {'events':>8} {'wall':>8}")
            for k, r in entry["lockstep"].items():
                print(f"{k:>24} {r['enqueue_ms']:>13.3f} {r['events_ms']:>8.3f} {r['wall_ms']:>8.3f}")
        report.append(entry)
    print(f"\ncard: {torch.cuda.get_device_name(device) if cuda else 'CPU'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
