"""`streamstyle demo`: the service and the reference engine as two processes, for real.

This process plays the engine: it starts `streamstyle serve` as a child process, renders the
reference scene, writes each frame's G-buffers straight into the shared ring (shared memory on the
CPU, CUDA IPC on a GPU), submits it over ZeroMQ, and renders the next frame while the service
works on this one. It switches prompts during the run (blended over a few frames), writes an MP4
of input | a G-buffer | output side by side, and prints a stats table.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from ..interop.layout import reference_layout
from ..interop.limits import MAX_DEADLINE_MS
from ..model.weights import shipped_weights
from ..service.config import available_cpus
from .bench import pct
from ..interop.client import Client
from .launch import child_service
from ..engine_plugins.reference_engine.camera import CameraPath
from ..engine_plugins.reference_engine.gbuffers import to_slot
from ..engine_plugins.reference_engine.render import Renderer
from ..engine_plugins.reference_engine.scene import Scene

DEFAULT_PROMPTS = ("watercolor painting", "cel shading with ink outlines", "pencil hatching", "neon glow")


def label(img: torch.Tensor, text: str) -> torch.Tensor:
    """Burn a caption into the top-left of an [H, W, 3] uint8 image."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray(img.numpy())
    draw = ImageDraw.Draw(pil)
    draw.rectangle([0, 0, 7 * len(text) + 6, 13], fill=(0, 0, 0))
    draw.text((3, 1), text, fill=(255, 255, 255))
    return torch.from_numpy(__import__("numpy").array(pil))


def run_demo(frames: int = 96, size: tuple[int, int] = (256, 192), steps: int = 2, prompts: list[str] | None = None,
             device: str = "cpu", out: str | Path | None = "streamstyle-demo.mp4", seed: int = 7, weights: str | None = None,
             preset: str = "default", fps: float = 30.0, engine: str = "reference", scene: str | None = None,
             log=print) -> dict:
    w, h = size
    prompts = list(prompts or DEFAULT_PROMPTS)
    if engine not in ("reference", "panda3d"):
        raise RuntimeError(f"unknown engine {engine!r}; known: reference, panda3d")
    if engine == "panda3d" and device.startswith("cuda"):
        raise RuntimeError("the Panda3D demo streams through shared memory; run it with --device cpu")
    if out is not None:
        try:
            import imageio_ffmpeg  # noqa: F401
            import PIL  # noqa: F401  (the captions)
        except ImportError:
            raise RuntimeError("the demo's video needs the video extra (imageio-ffmpeg and pillow): "
                               "pip install 'streamstyle[video]', or run it with --no-video") from None
    if weights is None and shipped_weights() is not None:
        weights = str(shipped_weights())
    backend = "cuda-ipc" if device.startswith("cuda") else "shm"
    args = ["--device", device, *(["--weights", weights] if weights else ["--preset", preset])]
    log(f"starting the service ({device}) ...")
    env = dict(os.environ)
    if not device.startswith("cuda"):
        # Two processes share the CPU: the engine renders on one thread, the service takes the
        # rest. Oversubscribed OpenMP pools stall each other for seconds on a small machine.
        args += ["--cpu-threads", str(max(1, available_cpus() - 1))]
        torch.set_num_threads(1)
    service_log = Path(tempfile.mkdtemp(prefix="streamstyle-demo-")) / "service.log"
    with child_service(args, env=env, log_path=service_log, stop_timeout_s=15) as address:
        trained = weights is not None
        if not trained:
            log("NOTE: the shipped weights are missing from this install: the service runs the default model "
                "with UNTRAINED random weights, so the output shows the pipeline working, not a style.")
        if engine == "panda3d":  # the engine side lives with the plugin (engine_plugins/panda3d/demo.py)
            from ..engine_plugins.panda3d.demo import run_panda3d_demo

            return run_panda3d_demo(address, frames, (w, h), steps, prompts, scene or "helmet", out, fps, seed, log)
        return _drive(address, frames, w, h, steps, prompts, device, backend, Path(out) if out is not None else None,
                      seed, fps, trained, log)


def _drive(address, frames, w, h, steps, prompts, device, backend, out, seed, fps, trained, log) -> dict:
    from tqdm import tqdm

    scene = Scene.generate(seed)
    renderer = Renderer(scene, CameraPath("handheld", seed=seed, extent=scene.extent), w, h, fps=fps,
                        device=device if device.startswith("cuda") else "cpu")
    layout = reference_layout(w, h)
    client = Client(address, name="reference-engine", timeout_s=120)
    session = client.open_session(w, h, layout, backend=backend, prompt=prompts[0],
                                  params={"steps": steps, "deadline_ms": MAX_DEADLINE_MS}, seed=seed)
    writer = None
    if out is not None:
        import imageio_ffmpeg

        # One encoder thread at the fastest preset: on a small machine x264 would otherwise take the
        # cores the service and the renderer need.
        writer = imageio_ffmpeg.write_frames(str(out), (3 * w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                             macro_block_size=2, ffmpeg_log_level="error",
                                             output_params=["-preset", "ultrafast", "-threads", "1"])
        writer.send(None)
    per_prompt = max(1, frames // len(prompts))
    done = late = dropped = 0
    total_ms, model_ms, round_trip = [], [], []
    current = prompts[0]
    pending = None  # (seq, frame, prompt, submitted at)
    reasons: list[str] = []
    t_start = time.perf_counter()

    def finish(item):
        nonlocal done, late
        seq, frame, prompt, sent = item
        ev = client.wait(session, seq, timeout_s=120)
        round_trip.append((time.perf_counter() - sent) * 1000)
        if ev.status == "done":
            done += 1
            late += int(ev.late)
            total_ms.append(ev.timings["total_ms"])
            model_ms.append(ev.timings["model_ms"])
            styled = torch.as_tensor(session.output(ev.slot)[..., :3]).to("cpu", copy=True)  # numpy (shm) or CUDA
        else:
            late += 1
            reasons.append(f"{ev.status}:{ev.reason}:{ev.message}")
            styled = torch.zeros(h, w, 3, dtype=torch.uint8)
        if writer is None:
            return
        raw = torch.round(frame.color.clamp(0, 1) * 255).to(torch.uint8).cpu()
        gbuf = torch.round((frame.normals * 0.5 + 0.5).clamp(0, 1) * 255).to(torch.uint8).cpu()
        panel = torch.cat([label(raw, "input"), label(gbuf, "normals"), label(styled, prompt[:40])], dim=1)
        writer.send(panel.contiguous().numpy().tobytes())

    # The bar is closed on every way out, a stop signal's included, so that what is printed
    # after it starts on a line of its own.
    with tqdm(total=frames, unit="frame", desc="demo", dynamic_ncols=True) as bar:
        for i in range(frames):
            want = prompts[min(len(prompts) - 1, i // per_prompt)]
            if want != current:
                session.set_prompt(want, blend_frames=8)
                current = want
            frame = renderer.render(i)  # overlaps with the service working on the previous frame
            if pending is not None:
                finish(pending)
                bar.update(1)
            slot = session.acquire_slot(timeout_s=120)
            to_slot(frame, layout, session.ring.input(slot))
            if backend == "cuda-ipc":
                pass  # the ring's ready event orders the copy before the service reads
            seq = session.submit(slot, view=frame.view, proj=frame.proj, dt=1 / fps,
                                 params={"reset": True} if frame.cut else None)
            pending = (seq, frame, current, time.perf_counter())
        finish(pending)
        bar.update(1)
    wall = time.perf_counter() - t_start
    if writer is not None:
        writer.close()
    stats = session.stats()
    dropped = stats["dropped"]
    session.close()
    client.close()
    handoff = [t - m for t, m in zip(total_ms, model_ms)]
    result = {"frames": frames, "size": f"{w}x{h}", "steps": steps, "device": device, "trained_weights": trained,
              "done": done, "late": late, "dropped": dropped, "fps": frames / wall,
              "service_p50_ms": pct(total_ms, 0.5), "service_p99_ms": pct(total_ms, 0.99),
              "model_p50_ms": pct(model_ms, 0.5), "handoff_p50_ms": pct(handoff, 0.5),
              "handoff_p99_ms": pct(handoff, 0.99), "round_trip_p50_ms": pct(round_trip, 0.5),
              "video": str(out.resolve()) if out is not None else None}
    log("")
    if reasons:
        log("frames not stylized: " + "; ".join(sorted(set(reasons))))
    log(f"StreamStyle demo: {frames} frames at {w}x{h}, {steps} steps, {device}, "
        f"{'trained' if trained else 'UNTRAINED'} weights, prompts: {', '.join(prompts)}")
    rows = [("frames done / late / dropped", f"{done} / {late} / {dropped}"),
            ("throughput", f"{result['fps']:.2f} fps (render and stylize, wall clock)"),
            ("service latency p50 / p99", f"{result['service_p50_ms']:.1f} / {result['service_p99_ms']:.1f} ms (frame received to done sent)"),
            ("model time p50", f"{result['model_p50_ms']:.1f} ms"),
            ("handoff overhead p50 / p99", f"{result['handoff_p50_ms'] * 1000:.0f} / {result['handoff_p99_ms'] * 1000:.0f} us (service time outside the model)"),
            ("engine round trip p50", f"{result['round_trip_p50_ms']:.1f} ms (submit to done received)"),
            ("video", result["video"] or "none (--no-video)")]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        log(f"  {k:<{width}}  {v}")
    return result
