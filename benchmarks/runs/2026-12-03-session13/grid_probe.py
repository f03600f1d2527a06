"""Where the 16-pixel grid in flat areas comes from: the strength of the pattern that repeats at
the token stride (16 px), in the DiT's latent upsampled (the refiner's `base` input), in the
refined frame, and in the style's oracle, on the sky of held-out scene 1,000,000 (the top rows).
The period-16 pattern is each pixel's mean over the 16x16 phase it sits at, minus the region's mean
(its RMS, RGB in [0, 1]); an image with no grid gives about its noise over the phases' counts. The
last column is the frame's pattern at the latent's own stride (4 px), a part of the 16-px one.
Usage (repository root): python benchmarks/runs/2026-12-03-session13/grid_probe.py [WEIGHTS [SEED...]]
With several held-out seeds, also how alike one style's pattern is from scene to scene (the sky
rows of each).
"""

import sys

import torch

import streamstyle.model.refiner as refiner_module
from streamstyle.engine_plugins.reference_engine.gbuffers import to_slot
from streamstyle.model.frame import FrameParams
from streamstyle.model.layout import reference_layout
from streamstyle.model.training.evaluate import EvalConfig, Targets, reference_sequences
from streamstyle.tools.cli import _eval_stylizer

W, H, P = 512, 256, 16
seen = {}
original = refiner_module.refine_composite


def probe(y, x, w3, b3, cond, w1, b1, base_ch, *args, **kw):
    seen["base"] = ((x[0, ..., base_ch:base_ch + 3].float() + 1) * 0.5)  # [H, W, 3]
    return original(y, x, w3, b3, cond, w1, b1, base_ch, *args, **kw)


def pattern(img: torch.Tensor, rows: int, period: int = P) -> torch.Tensor:
    """The pattern of `period` px over the top `rows` rows of img [H, W, 3]: [period, period, 3]."""
    r = img[:rows - rows % period, :W - W % period].float()
    h, w = r.shape[0] // period, r.shape[1] // period
    phases = r.reshape(h, period, w, period, 3).mean(dim=(0, 2))
    return phases - phases.mean(dim=(0, 1))


def grid(img: torch.Tensor, rows: int, period: int = P) -> float:
    """The RMS of that pattern."""
    return float(pattern(img, rows, period).pow(2).mean().sqrt())


def last_frame(seq, prompt: str) -> torch.Tensor:
    """The last refined frame [H, W, 3] of a session run over `seq` with `prompt` (the DiT's
    upsampled latent of that frame is left in seen["base"])."""
    s = sty.open_session(W, H, layout, seed=seq.seed)
    sty.set_prompt(s, prompt)
    slot = None
    for f in seq.frames:
        slot = to_slot(f, layout, slot)
        out = sty.step(s, slot, FrameParams(steps=2, strength=0.5, reset=f.cut)).permute(1, 2, 0)
    sty.close_session(s)
    return out


refiner_module.refine_composite = probe
weights = sys.argv[1] if len(sys.argv) > 1 else "model/weights/default"
seeds = [int(a) for a in sys.argv[2:]] or [1000000]
cfg = EvalConfig(seeds=seeds[:1], size=(W, H), frames=4)
seq = next(iter(reference_sequences(cfg, torch.device("cpu"))))
styles = ["cel", "watercolor", "noir", "neon"]
targets = Targets.of(seq.frames, styles)
sky = 48  # the top rows: sky in this scene
sty = _eval_stylizer(weights, "cpu")
layout = reference_layout(W, H, surface=True)
print(f"{weights}: RMS of the 16-px pattern over the top {sky} rows (last of {cfg.frames} frames)")
print(f"{'style':12} {'latent up':>10} {'frame':>10} {'oracle':>10} {'input':>10} {'frame, 4 px':>12}")
patterns = {}
for style in styles:
    out = last_frame(seq, cfg.prompts[style][0])
    base = seen["base"][:H, :W]
    oracle = targets.averaged[style][-1]
    color = seq.frames[-1].color[..., :3]
    patterns[style] = pattern(out, sky).flatten()
    print(f"{style:12} {grid(base, sky):10.5f} {grid(out, sky):10.5f} {grid(oracle, sky):10.5f} {grid(color, sky):10.5f} {grid(out, sky, 4):12.5f}")
names = list(patterns)
print("correlation of the frames' 16-px patterns between styles (1: the same pattern):")
for i, a in enumerate(names):
    print(f"{a:12} " + " ".join(f"{float(torch.nn.functional.cosine_similarity(patterns[a], patterns[b], dim=0)):6.2f}"
                               for b in names))


def frame_pattern(seed: int, style: str) -> torch.Tensor:
    c = EvalConfig(seeds=[seed], size=(W, H), frames=4)
    return pattern(last_frame(next(iter(reference_sequences(c, torch.device("cpu")))), c.prompts[style][0]), sky).flatten()


if len(seeds) > 1:
    print("cosine similarity of one style's 16-px pattern between scenes " + ", ".join(map(str, seeds)) + ":")
    for style in styles:
        ps = [patterns[style]] + [frame_pattern(seed, style) for seed in seeds[1:]]
        sims = [float(torch.nn.functional.cosine_similarity(ps[i], ps[j], dim=0))
                for i in range(len(ps)) for j in range(i + 1, len(ps))]
        print(f"{style:12} " + " ".join(f"{x:6.2f}" for x in sims))
