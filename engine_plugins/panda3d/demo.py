"""`streamstyle demo --engine panda3d`: the demo on a real engine and a real scene.

This process is the game: Panda3D renders the scene headless (EGL), the StreamStyle plugin streams
each frame's G-buffers to a service and composites its answers, exactly as a game would see them.
The game loop runs free at up to `fps` and never waits for the service; prompts switch during the
run (blended). It writes an MP4 of engine | normals | what the player sees, and returns the same
figures as the reference-engine demo, plus the game's own frame time.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

DEFAULT_PROMPTS = ("watercolor painting", "cel shading with ink outlines", "pencil hatching", "neon glow")


def pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q * 100)) if len(values) else float("nan")


def screenshot(base) -> np.ndarray:
    """The window's image as the player sees it: [H, W, 3] uint8, top row first."""
    tex = base.win.getScreenshot()
    w, h = tex.getXSize(), tex.getYSize()
    return np.frombuffer(memoryview(tex.getRamImageAs("RGB")), np.uint8).reshape(h, w, 3)[::-1]


def _label(img: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    pil = Image.fromarray(np.ascontiguousarray(img))
    draw = ImageDraw.Draw(pil)
    draw.rectangle([0, 0, 7 * len(text) + 6, 13], fill=(0, 0, 0))
    draw.text((3, 1), text, fill=(255, 255, 255))
    return np.asarray(pil)


def run_panda3d_demo(address: str, frames: int = 96, size: tuple[int, int] = (256, 192), steps: int = 2,
                     prompts=None, scene: str = "helmet", out: str | Path | None = "streamstyle-demo.mp4",
                     fps: float = 30.0, seed: int = 7, log=print) -> dict:
    from .headless import headless_base
    from .plugin import StreamStyle
    from .scenes import build_scene

    w, h = size
    prompts = list(prompts or DEFAULT_PROMPTS)
    base = headless_base(w, h)
    try:
        world = build_scene(base, scene)
        style = StreamStyle(base, address, prompt=prompts[0], steps=steps, prompts=prompts, seed=seed,
                            deadline_ms=60000.0)
        writer = None
        if out is not None:
            import imageio_ffmpeg

            writer = imageio_ffmpeg.write_frames(str(out), (3 * w, h), fps=fps, codec="libx264",
                                                 pix_fmt_out="yuv420p", macro_block_size=2, ffmpeg_log_level="error",
                                                 output_params=["-preset", "ultrafast", "-threads", "1"])
            writer.send(None)
        if not style.link.connected.wait(120):
            raise RuntimeError(f"the plugin could not open a session at {address}: {style.link.stats.last_error}")
        per_prompt = max(1, frames // len(prompts))
        frame_ms, current = [], prompts[0]
        t_start = time.perf_counter()
        for i in range(frames):
            tick = time.perf_counter()
            want = prompts[min(len(prompts) - 1, i // per_prompt)]
            if want != current:
                style.set_prompt(want)
                current = want
            world.pose(base, i, fps)
            base.taskMgr.step()
            frame_ms.append((time.perf_counter() - tick) * 1000)
            if writer is not None:
                raw = style.gbuffer.read()
                c = np.maximum(raw.planes["color"][..., :3], 0)
                engine = np.round(np.clip((c / (1 + c)) ** (1 / 2.2), 0, 1) * 255).astype(np.uint8)
                normals = np.round(np.clip(raw.planes["geometry"][..., :3] * 0.5 + 0.5, 0, 1) * 255).astype(np.uint8)
                seen = screenshot(base)
                tag = current[:32] if style.showing_stylized else "engine frame (no stylized frame yet)"
                panel = np.concatenate([_label(engine, "engine"), _label(normals, "normals"), _label(seen, tag)], 1)
                writer.send(np.ascontiguousarray(panel).tobytes())
            spare = 1 / fps - (time.perf_counter() - tick)
            if spare > 0:
                time.sleep(spare)  # a game paces itself to its display; the service's thread runs meanwhile
        wall = time.perf_counter() - t_start
        time.sleep(0.5)  # the last answers
        if writer is not None:
            writer.close()
        st = style.link.stats
        handoff = [t - m for t, m in zip(st.service_ms, st.model_ms)]
        result = {"engine": "panda3d", "scene": scene, "frames": frames, "size": f"{w}x{h}", "steps": steps,
                  "submitted": st.submitted, "done": st.done, "late": st.late, "skipped": st.skipped,
                  "errors": st.errors, "nonfinite": style.nonfinite, "shown_stylized": style.shown_stylized,
                  "game_fps": frames / wall, "stylized_fps": st.done / wall,
                  "game_frame_p50_ms": pct(frame_ms, 0.5), "game_frame_p99_ms": pct(frame_ms, 0.99),
                  "service_p50_ms": pct(st.service_ms, 0.5), "service_p99_ms": pct(st.service_ms, 0.99),
                  "model_p50_ms": pct(st.model_ms, 0.5), "handoff_p50_ms": pct(handoff, 0.5),
                  "handoff_p99_ms": pct(handoff, 0.99), "round_trip_p50_ms": pct(st.round_trip_ms, 0.5),
                  "video": str(Path(out).resolve()) if out is not None else None}
        style.close()
    finally:
        base.destroy()
    log("")
    log(f"StreamStyle demo on Panda3D: scene {scene}, {frames} frames at {w}x{h}, {steps} steps, "
        f"prompts: {', '.join(prompts)}")
    rows = [("frames submitted / done / late / skipped", f"{result['submitted']} / {result['done']} / {result['late']} / {result['skipped']}"),
            ("game loop", f"{result['game_fps']:.1f} fps; frame p50 / p99 {result['game_frame_p50_ms']:.1f} / {result['game_frame_p99_ms']:.1f} ms (render, read back, submit)"),
            ("stylized throughput", f"{result['stylized_fps']:.2f} fps; {result['shown_stylized']} of {frames} frames shown stylized"),
            ("service latency p50 / p99", f"{result['service_p50_ms']:.1f} / {result['service_p99_ms']:.1f} ms (frame received to done sent)"),
            ("model time p50", f"{result['model_p50_ms']:.1f} ms"),
            ("handoff overhead p50 / p99", f"{result['handoff_p50_ms'] * 1000:.0f} / {result['handoff_p99_ms'] * 1000:.0f} us (service time outside the model)"),
            ("engine round trip p50", f"{result['round_trip_p50_ms']:.1f} ms (submit to done received)"),
            ("non-finite values replaced", str(result["nonfinite"])),
            ("video", result["video"] or "none (--no-video)")]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        log(f"  {k:<{width}}  {v}")
    return result
