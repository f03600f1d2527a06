"""How far a gradual prompt blend lags on the shipped model (it keeps ~0.996 of valid history): a
session in style A blends to style B over `--blend` frames from frame `--at` (the service's
`_blend_step` weights: k / total), then stays in B; per frame, the fidelity PSNR against B's
averaged oracle, beside a session started in B and a hard switch with a reset at `--at`.
Usage: blend_probe.py [WEIGHTS] [--size 128x128] [--frames 32] [--at 8] [--blend 8]"""
import argparse

import torch

from streamstyle.engine_plugins.reference_engine.gbuffers import to_slot
from streamstyle.model.frame import FrameParams
from streamstyle.model.layout import reference_layout
from streamstyle.model.training.evaluate import EvalConfig, Targets, psnr, reference_sequences
from streamstyle.tools.cli import _eval_stylizer

p = argparse.ArgumentParser()
p.add_argument("weights", nargs="?", default="model/weights/default")
p.add_argument("--size", default="128x128")
p.add_argument("--frames", type=int, default=32)
p.add_argument("--at", type=int, default=8)
p.add_argument("--blend", type=int, default=8)
p.add_argument("--pairs", default="noir:watercolor,cel:noir,watercolor:pixelart")
a = p.parse_args()
w, h = map(int, a.size.split("x"))
cfg = EvalConfig(seeds=[1000000], size=(w, h), frames=a.frames)
seq = next(iter(reference_sequences(cfg, torch.device("cpu"))))
pairs = [tuple(x.split(":")) for x in a.pairs.split(",")]
targets = Targets.of(seq.frames, sorted({s for pr in pairs for s in pr}))
layout = reference_layout(w, h, surface=True)
sty = _eval_stylizer(a.weights, "cpu")


def run(prompt_at):
    s = sty.open_session(w, h, layout, seed=seq.seed)
    outs, slot = [], None
    for i, f in enumerate(seq.frames):
        if i in prompt_at:
            prompt, reset = prompt_at[i]
            sty.set_prompt(s, prompt, reset=reset)
        slot = to_slot(f, layout, slot)
        outs.append(sty.step(s, slot, FrameParams(steps=2, strength=0.5, reset=f.cut)).permute(1, 2, 0).float())
    sty.close_session(s)
    return outs


for x, y in pairs:
    px, py = cfg.prompts[x][0], cfg.prompts[y][0]
    blend = {0: (px, False)}
    for k in range(1, a.blend + 1):
        wgt = k / a.blend
        parts = [(px, 1 - wgt), (py, wgt)] if wgt < 1 else py
        blend[a.at + k - 1] = ([pt for pt in parts if pt[1] > 0] if isinstance(parts, list) else parts, False)
    rows = {"fresh": run({0: (py, False)}), "hard+reset": run({0: (px, False), a.at: (py, True)}),
            "blend": run(blend)}
    end = a.at + a.blend
    for name, outs in rows.items():
        v = [psnr(o, t) for o, t in zip(outs, targets.averaged[y])]
        print(f"{x}->{y} {name:10s} " + " ".join(f"{z:5.1f}" for z in v[a.at:]) +
              f" | mean after the blend's end {sum(v[end:]) / len(v[end:]):5.2f}", flush=True)
