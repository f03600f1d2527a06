"""`streamstyle bench`: how fast a model stylizes frames, where the time goes, and how far from the
floor it is, with peers timed on the same card.

Per size and step count:
- check: the fast path (service dtype, kernel backend `auto`, CUDA graph on a GPU) against the
  float32 reference kernels on the same frame; a failed check is reported and nothing of that
  configuration is timed;
- model step: `Stylizer.step` p50 / p99 (device events on a GPU);
- stages: pack, warp + start, each DiT step, history (the previous frame warped at full
  resolution), refine + write-back (the refiner's passes and the write into the engine's output
  format): the same frame function the step runs, called eagerly with a device
  event at the end of each stage (so they add up to more than the graphed step: each stage pays
  its launches);
- memory: peak device memory of the model alone and the extra a session of that size adds;
- floor: the model's FLOPs and bytes per frame (`model-info`) over this card's measured bf16
  matmul rate and copy bandwidth, and the measured step over it;
- service: end to end through the real service in its own process and a client in this one (CUDA
  IPC on a GPU, shared memory on the CPU), lockstep, prompt switches, p50 / p99, handoff (service
  time outside the model) and the engine's round trip.
With `--peers` (needs the `peers` extra: diffusers), peers with random weights on the same card:
StreamDiffusion's setup (SD-turbo's UNet + TAESD, 512x512, 1 step, CUDA graph) and SANA's (the
600M DiT + DC-AE at our size, 1 and 2 steps).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..interop.limits import DEFAULT_DEADLINE_MS_CPU
from ..kernels import backend as kernel_backend
from ..model.config import ModelConfig, preset
from ..model.frame import FrameParams, padded_size, stylize_frame
from ..model.info import model_info
from ..model.layout import FORMATS, GBufferLayout, reference_layout
from ..model.network import StreamStyleModel
from ..model.state import StateSpec
from ..model.stylizer import Stylizer, null_context
from ..model.weights import load_weights, shipped_weights
from ..interop.layout import output_bytes

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "fp16": 2e-2, "fp8": 1e-1}  # relative L2 error of a frame vs fp32

# The service's deadline while benchmarked: generous, so that a slow frame is timed, not dropped
# (on the CPU the service's own default; a loaded 2-core machine can take over a second a frame).
BENCH_DEADLINE_MS = {"cpu": DEFAULT_DEADLINE_MS_CPU, "cuda": 1000.0}


def cast_model(model: StreamStyleModel, dtype: str) -> StreamStyleModel:
    """The model in a service dtype: fp32, bf16, fp16, or fp8 (bf16 with FP8 block GEMMs)."""
    if dtype == "fp8":
        from ..model.fp8 import to_fp8

        return to_fp8(model.to(torch.bfloat16))
    return model.to(DTYPES[dtype])
SWITCH_PROMPTS = ["watercolor painting", "cel shading with ink outlines", "pencil hatching", "neon glow"]


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def random_slot(layout: GBufferLayout, w: int, h: int, device, gen: torch.Generator) -> torch.Tensor:
    """A slot of plausible random G-buffers (positive depth, small motion)."""
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


class Timer:
    """Wall time of a callable: device events on a GPU, perf_counter on the CPU (ms)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def check_and_time(model32: StreamStyleModel, w: int, h: int, steps: int, dtype: str, device: torch.device,
                   frames: int, gen: torch.Generator, backend: str = "auto", graphs: bool = False,
                   tolerance: float | None = None) -> dict:
    """The fast configuration's first frame against the fp32 reference kernels; then, if it passes
    (relative L2 error within `tolerance`, by default TOLERANCE[dtype]), `frames` timed steps.
    Returns a row with status ok or FAILED (FAILED rows carry no timings)."""
    cfg = model32.config
    layout = reference_layout(w, h)
    slots = [random_slot(layout, w, h, device, gen) for _ in range(3)]  # rotate: no cache-resident input
    model = StreamStyleModel(cfg).to(device)
    model.load_state_dict(model32.state_dict())
    model = cast_model(model, dtype)
    from ..model.cache import CacheConfig
    from ..model.frame import padded_size
    from ..model.state import StateSpec

    # One session's pages (at 4K its full-resolution history is most of them) and the null page.
    cache = CacheConfig(num_pages=CacheConfig().pages_for(StateSpec(cfg, *padded_size(cfg, w, h)).numel) + 1)
    ref = Stylizer(model32, device=device, cache=cache)
    sty = Stylizer(model, device=device, cuda_graphs=graphs, cache=cache)  # as the service: finiteness checked
    params = FrameParams(steps=steps)
    sr, ss = ref.open_session(w, h, layout, seed=1), sty.open_session(w, h, layout, seed=1)
    previous = kernel_backend.get_backend()
    try:
        kernel_backend.set_backend("reference")  # the check is always against the reference kernels in fp32
        a = ref.step(sr, slots[0], params)
        kernel_backend.set_backend(backend)
        b = sty.step(ss, slots[0], params)
        err = ((a - b).norm() / a.norm()).item()
        row = {"preset": cfg.name, "size": f"{w}x{h}", "steps": steps, "dtype": dtype,
               "backend": backend + ("+graph" if graphs else ""), "rel_err_vs_fp32": err}
        if not bool(torch.isfinite(b).all()) or not err <= (TOLERANCE[dtype] if tolerance is None else tolerance):
            row["status"] = "FAILED"
            return row
        if dtype == "fp8" and device.type == "cuda":
            from ..model.fp8 import Fp8Linear

            if not all(m.fast for m in model.modules() if isinstance(m, Fp8Linear)):
                row.update(status="FAILED", reason="the FP8 tensor-core product was refused; the layers run emulated")
                return row
        # Timed as the service runs a frame: written into an RGBA8 output slot.
        out = torch.empty(output_bytes(w, h, "rgba8"), dtype=torch.uint8, device=device)
        for i in range(3):  # warm-up
            sty.step_into(ss, slots[i % 3], out, "rgba8", params)
        timer = Timer(device)
        times = sorted(timer(lambda i=i: sty.step_into(ss, slots[i % 3], out, "rgba8", params)) for i in range(frames))
    finally:
        kernel_backend.set_backend(previous)
        ref.close_session(sr)
        sty.close_session(ss)
    info = model_info(cfg, w, h, steps)
    row.update(status="ok", p50_ms=statistics.median(times), p99_ms=pct(times, 0.99),
               gflop_per_frame=info["flops_per_frame"] / 1e9, tokens=info["tokens_per_frame"])
    row["achieved_tflops"] = info["flops_per_frame"] / (row["p50_ms"] * 1e-3) / 1e12
    if device.type == "cuda":
        row["peak_mem_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return row


class StageClock:
    """Marks along one call of the frame function (its `trace`): a device event per mark on a GPU,
    perf_counter on the CPU. `times()` gives each stage's ms, from the previous mark to its own."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[str, object]] = [("start", self._now())]

    def _now(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def mark(self, stage: str) -> None:
        self.marks.append((stage, self._now()))

    def times(self) -> dict[str, float]:
        if self.cuda:
            self.marks[-1][1].synchronize()
        return {name: prev.elapsed_time(at) if self.cuda else (at - prev) * 1e3
                for (_, prev), (name, at) in zip(self.marks, self.marks[1:])}


@torch.no_grad()
def stage_times(model: StreamStyleModel, w: int, h: int, steps: int, device: torch.device, reps: int,
                gen: torch.Generator, out_format: str = "rgba8", seed: int = 1,
                out: torch.Tensor | None = None) -> dict[str, float]:
    """Median ms of each stage of one frame: the frame function itself (`stylize_frame`, eager,
    written into an `out_format` output slot), with a mark at the end of each stage (its `trace`),
    over reps frames after a warm-up frame. The frames run as a session opened with `seed` runs
    them (the state carried in its stored dtypes, the noise drawn from a device generator seeded with `seed`), so the
    last one, left in `out` when given, is the frame `Stylizer.step_into` gives for the same slot.
    Keys: pack, warp (cut, warp, start levels, G-buffer embedding), dit_1 .. dit_K, history (the
    full-resolution warp of the previous frame), decode (the refiner's passes and the write into
    the engine's output format)."""
    cfg = model.config
    layout = reference_layout(w, h)
    slot = random_slot(layout, w, h, device, gen)
    planes = {k: v.unsqueeze(0) for k, v in layout.view(slot, w, h).items()}
    ctx = null_context(model, device)
    if out is None:
        out = torch.zeros(output_bytes(w, h, out_format), dtype=torch.uint8, device=device)
    spec = StateSpec(cfg, *padded_size(cfg, w, h))
    state = spec.zeros(device)
    noise_gen = torch.Generator(device=device).manual_seed(seed)
    params = FrameParams(steps=steps)
    samples: dict[str, list[float]] = {}
    for rep in range(reps + 1):
        noise = torch.randn(spec.shapes()["latent"], generator=noise_gen, device=device)
        clock = StageClock(device)
        _, nxt = stylize_frame(model, layout, planes, w, h, ctx, state, noise, params, out=(out, out_format),
                               trace=clock.mark)
        state = spec.unflatten(spec.flatten(nxt))  # as the cache stores it (the frame in bf16), untimed
        if rep:  # the first frame is a warm-up
            for name, ms in clock.times().items():
                samples.setdefault(name, []).append(ms)
    return {k: statistics.median(v) for k, v in samples.items()}


def measure_floor(device: torch.device) -> dict[str, float]:
    """This card's bf16 matmul rate (TFLOP/s, 4096^3) and device copy bandwidth (GB/s, 1 GiB read +
    write); on the CPU, fp32 at 1024^3 and 256 MiB."""
    timer = Timer(device)
    cuda = device.type == "cuda"
    n, dtype = (4096, torch.bfloat16) if cuda else (1024, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    mm = statistics.median(timer(lambda: a @ b) for _ in range(10))
    elems = (2 ** 30 if cuda else 2 ** 28) // 4
    src = torch.empty(elems, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)
    cp = statistics.median(timer(lambda: dst.copy_(src)) for _ in range(10))
    return {"matmul_tflops": 2 * n ** 3 / (mm * 1e-3) / 1e12, "copy_gbps": 2 * src.numel() * 4 / (cp * 1e-3) / 1e9}


def floor_ms(cfg: ModelConfig, w: int, h: int, steps: int, floor: dict[str, float]) -> float:
    """The larger of the compute time and the memory time of one frame at this card's rates."""
    info = model_info(cfg, w, h, steps)
    return max(info["flops_per_frame"] / (floor["matmul_tflops"] * 1e12),
               info["bytes_per_frame"] / (floor["copy_gbps"] * 1e9)) * 1e3


def service_run(sizes: list[tuple[int, int]], steps: int, frames: int, device: str, weights: str | None,
                preset_name: str, prompts: bool = True, log=print, dtype: str = "auto",
                service_config: str | None = None) -> list[dict]:
    """The real service in its own process, this process as the engine (the real client), lockstep,
    eight distinct reference-engine frames cycled, prompt switches (blended over 8 frames) every 250
    frames. `service_config`: a service config file (docs/protocol.md) to serve with. Returns one
    row per size."""
    from ..engine_plugins.reference_engine import CameraPath, Renderer, Scene
    from ..engine_plugins.reference_engine.gbuffers import to_slot
    from ..interop.client import Client
    from .launch import child_service

    args = ["--device", device, *(["--weights", str(weights)] if weights else ["--preset", preset_name]),
            "--quiet", "--deadline-ms", str(BENCH_DEADLINE_MS["cpu" if device == "cpu" else "cuda"]), "--dtype", dtype,
            *([] if prompts else ["--no-prompts"]),
            *(["--config", str(service_config)] if service_config else [])]
    rows = []
    with child_service(args) as address:
        backend = "cuda-ipc" if device.startswith("cuda") else "shm"
        client = Client(address, timeout_s=120)
        for w, h in sizes:
            scene = Scene.generate(3)
            renderer = Renderer(scene, CameraPath("handheld", seed=3, extent=scene.extent), w, h, device=device)
            layout = reference_layout(w, h)
            slots = [to_slot(renderer.render(i), layout) for i in range(8)]
            session = client.open_session(w, h, layout, backend=backend, params={"steps": steps},
                                          prompt=SWITCH_PROMPTS[0] if prompts else None)
            total, model, queue, rtt, late, t_start = [], [], [], [], 0, time.perf_counter()
            blending = set()  # frame indices (from 0 after the warm-up) in a prompt blend
            for i in range(frames + 20):
                if i == 20:
                    t_start = time.perf_counter()
                if prompts and i % 250 == 125:
                    session.set_prompt(SWITCH_PROMPTS[(i // 250 + 1) % len(SWITCH_PROMPTS)], blend_frames=8)
                    blending.update(range(i - 20, i - 20 + 8))
                slot = session.acquire_slot(timeout_s=30)
                torch.as_tensor(session.ring.input(slot)).copy_(slots[i % len(slots)])  # numpy (shm) or CUDA
                t0 = time.perf_counter()
                ev = client.wait(session, session.submit(slot), timeout_s=60)
                if i < 20:
                    continue
                rtt.append((time.perf_counter() - t0) * 1000)
                if ev.status != "done":
                    late += 1
                    continue
                late += int(ev.late)
                total.append(ev.timings["total_ms"])
                model.append(ev.timings["model_ms"])
                queue.append(ev.timings["queue_ms"])
            wall = time.perf_counter() - t_start
            stats = session.stats()
            gc_stats = {k: v for k, v in client.stats()["service"].items() if k.startswith("gc_")}
            session.close()
            slowest = sorted(range(len(total)), key=lambda j: -total[j])[:5]
            handoff = [t - m for t, m in zip(total, model)]
            row = {"size": f"{w}x{h}", "device": device, "backend": backend, "steps": steps,
                   "weights": str(weights) if weights else f"{preset_name} (untrained)", "frames": frames,
                   "late": late, "dropped": stats["dropped"], "fps": frames / wall,
                   "service_p50_ms": pct(total, 0.5), "service_p99_ms": pct(total, 0.99),
                   "model_p50_ms": pct(model, 0.5), "handoff_p50_us": pct(handoff, 0.5) * 1000,
                   "handoff_p99_us": pct(handoff, 0.99) * 1000, "round_trip_p50_ms": pct(rtt, 0.5),
                   "round_trip_p99_ms": pct(rtt, 0.99), "service_gc": gc_stats,
                   "slowest": [{"frame": j, "total_ms": total[j], "model_ms": model[j], "queue_ms": queue[j],
                                "blend": j in blending} for j in slowest]}
            rows.append(row)
            log(json.dumps(row))
        client.close()
    return rows


@dataclass
class BenchConfig:
    preset: str | None = None  # None: the shipped default weights (else untrained default)
    weights: str | None = None
    sizes: list[tuple[int, int]] = field(default_factory=lambda: [(1280, 720), (1920, 1088), (3840, 2160)])
    steps: list[int] = field(default_factory=lambda: [1, 2, 4])
    frames: int = 1000  # through the service; the model step is timed over 20 to 200 of them
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    dtype: str = "auto"
    service: bool = True
    service_config: str | None = None  # a service config file to serve with (docs/protocol.md)
    peers: bool = False
    stage_reps: int = 10


def run_bench(cfg: BenchConfig, log=print) -> dict:
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but no CUDA device is available")
    dtype = cfg.dtype if cfg.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    weights = cfg.weights or (shipped_weights() if cfg.preset is None else None)
    if weights:
        model32 = load_weights(weights, device=device).float()
    else:
        torch.manual_seed(0)
        model32 = StreamStyleModel(preset(cfg.preset or "default")).to(device).eval()
    mc = model32.config
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    log(f"bench: {mc.name} model ({weights or 'untrained'}), {dtype}, on {card}")
    floor = measure_floor(device)
    log(f"card: {floor['matmul_tflops']:.3g} TFLOP/s ({'bf16' if device.type == 'cuda' else 'fp32'} matmul), "
        f"{floor['copy_gbps']:.0f} GB/s copy")
    gen = torch.Generator().manual_seed(0)
    graphs = device.type == "cuda"
    rows = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        bits = 8 if dtype == "fp8" else torch.finfo(DTYPES[dtype]).bits
        weights_mib = sum(p.numel() * bits // 8 for p in model32.parameters()) / 2 ** 20
    else:
        weights_mib = sum(p.numel() * 4 for p in model32.parameters()) / 2 ** 20
    for w, h in cfg.sizes:
        for k in cfg.steps:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            row = check_and_time(model32, w, h, k, dtype, device, min(max(cfg.frames, 20), 200), gen, "auto", graphs)
            if row["status"] == "ok":
                fast = StreamStyleModel(mc).to(device)
                fast.load_state_dict(model32.state_dict())
                fast = cast_model(fast, dtype).eval()
                row["stages_ms"] = stage_times(fast, w, h, k, device, cfg.stage_reps, gen)
                row["floor_ms"] = floor_ms(mc, w, h, k, floor)
                row["floor_ratio"] = row["p50_ms"] / row["floor_ms"]
                if device.type == "cuda":
                    row["model_mib"] = weights_mib
                    row["session_peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
                del fast
            rows.append(row)
            log(json.dumps(row))
    service_rows = []
    if cfg.service:
        for k in cfg.steps:
            service_rows += service_run(cfg.sizes, k, cfg.frames, cfg.device, str(weights) if weights else None,
                                        cfg.preset or "default", log=log, dtype=dtype,
                                        service_config=cfg.service_config)
    peer_rows = []
    if cfg.peers:
        from .peers import run_peers

        peer_rows = run_peers(device, [(w, h) for w, h in cfg.sizes], log=log)
    return {"card": card, "model": mc.name, "weights": str(weights) if weights else "untrained", "dtype": dtype,
            "floor": floor, "rows": rows, "service": service_rows, "peers": peer_rows}


def format_bench(report: dict) -> str:
    lines = [f"StreamStyle bench: {report['model']} model ({report['weights']}), {report['dtype']}, "
             f"on {report['card']}; card {report['floor']['matmul_tflops']:.3g} TFLOP/s matmul, "
             f"{report['floor']['copy_gbps']:.0f} GB/s copy", ""]
    lines.append(f"{'size':>10} {'steps':>5} {'check':>7} {'step p50':>9} {'p99':>7} {'floor':>7} {'x floor':>8} "
                 f"{'pack':>6} {'warp':>6} {'dit/step':>8} {'history':>7} {'refine+write':>12} {'peak MiB':>9}")
    for r in report["rows"]:
        if r["status"] != "ok":
            why = r.get("reason", f"relative error {r['rel_err_vs_fp32']:.1e}")
            lines.append(f"{r['size']:>10} {r['steps']:>5} {'FAILED':>7}  ({why}: not timed)")
            continue
        st = r["stages_ms"]
        dit = statistics.fmean(v for k, v in st.items() if k.startswith("dit_"))
        lines.append(f"{r['size']:>10} {r['steps']:>5} {r['rel_err_vs_fp32']:>7.0e} {r['p50_ms']:>9.2f} {r['p99_ms']:>7.2f} "
                     f"{r['floor_ms']:>7.2f} {r['floor_ratio']:>8.1f} {st['pack']:>6.2f} {st['warp']:>6.2f} {dit:>8.2f} "
                     f"{st.get('history', float('nan')):>7.2f} {st['decode']:>12.2f} {r.get('session_peak_mib', float('nan')):>9.0f}")
    lines.append("(ms; stages: the frame function run eagerly, marked at each stage's end; the step as the service runs it)")
    if report["service"]:
        lines += ["", "Through the service (another process, real client, prompt switches):",
                  f"{'size':>10} {'steps':>5} {'frames':>6} {'fps':>7} {'p50 ms':>7} {'p99 ms':>7} {'p99/p50':>7} "
                  f"{'model':>7} {'handoff us p50/p99':>19} {'late':>5}"]
        for r in report["service"]:
            lines.append(f"{r['size']:>10} {r['steps']:>5} {r['frames']:>6} {r['fps']:>7.1f} {r['service_p50_ms']:>7.2f} "
                         f"{r['service_p99_ms']:>7.2f} {r['service_p99_ms'] / r['service_p50_ms']:>7.2f} "
                         f"{r['model_p50_ms']:>7.2f} {r['handoff_p50_us']:>9.0f}/{r['handoff_p99_us']:<9.0f} {r['late']:>5}")
        for r in report["service"]:
            slow = ", ".join(f"#{f['frame']} {f['total_ms']:.2f} (model {f['model_ms']:.2f}{', blend' if f['blend'] else ''})"
                             for f in r.get("slowest", []))
            g = r.get("service_gc") or {}
            lines.append(f"{r['size']:>10} slowest frames: {slow}; service GC: {g.get('gc_collections', '?')} collections, "
                         f"{g.get('gc_in_frames', '?')} inside frames, longest {g.get('gc_max_ms', float('nan')):.2f} ms")
    if report["peers"]:
        lines += ["", "Peers (random weights, same card):", f"{'peer':<44} {'size':>10} {'steps':>5} {'p50 ms':>8} {'p99 ms':>8}"]
        for r in report["peers"]:
            lines.append(f"{r['peer']:<44} {r['size']:>10} {r['steps']:>5} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")
    return "\n".join(lines)
