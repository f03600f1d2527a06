"""Where a training step's time goes: rendering a shot, the style oracles, the G-buffer planes, and
the model's forward + backward in each phase, at a given size and batch.

    python benchmarks/profile_train.py [--size 256] [--batch 16,32] [--frames 4] [--preset default]
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
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    src = ReferenceClips(args.size, args.size, args.frames, device=dev)
    rng = random.Random(0)
    rows = []
    frames = src._shot(rng)
    rows.append(("render a shot (render_many)", timed(lambda: src._shot(random.Random(rng.random())), args.reps, sync)[0]))
    rows.append(("all 9 oracles of a shot", timed(lambda: [fn(f) for fn in STYLES.values() for f in frames],
                                                  args.reps, sync)[0]))
    rows.append(("G-buffer planes of a shot", timed(lambda: [to_planes(f, src.layout) for f in frames],
                                                    args.reps, sync)[0]))
    rows.append(("ClipBank shot (all of the above)", timed(lambda: src.shot(rng.randrange(10**6)), args.reps, sync)[0]))
    model = StreamStyleModel(preset(args.preset)).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    bank = ClipBank(src, 16, refresh=10**9)
    auto = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    for b in (int(x) for x in args.batch.split(",")):
        clips = [bank.clip(i) for i in range(b)]
        ctx = [null_context(model, dev)] * b
        for name, obj in (("flow", ObjectiveConfig()), ("few-step (1,2,4)", ObjectiveConfig(sampler_steps=(1, 2, 4)))):
            def step():
                with auto:
                    loss, _ = batch_loss(model, clips, ctx, StepRandomness.seeded(1, 0, range(b)), obj)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            timed(step, 2, sync)  # warm up
            ms = timed(step, args.reps, sync)[0]
            rows.append((f"train step, {name}, batch {b} x {args.frames} frames", ms))
            rows.append(("  -> model frames/s", b * args.frames / ms * 1e3))
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "CPU"
    print(f"\n{args.preset} preset, {args.size}x{args.size}, {name}")
    for label, value in rows:
        print(f"{label:<48} {value:10.1f}{'' if 'frames/s' in label else ' ms'}")


if __name__ == "__main__":
    main()
