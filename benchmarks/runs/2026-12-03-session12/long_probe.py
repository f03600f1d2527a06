"""Does a model that keeps more history stay right over long sequences, and follow a prompt switch?
Held-out scene(s) through the service's per-frame path (the Stylizer, as `streamstyle eval` runs it):
per frame, the fidelity PSNR against the asked style's averaged oracle over a long handheld path; then
a session that runs style A and switches to style B without a reset, scored against B per frame.
With a reset at the switch too (`reset` rows).
Usage: long_probe.py WEIGHTS... [--size 128x128] [--frames 48] [--switch 8]"""
import argparse, json
from pathlib import Path

import torch

from streamstyle.model.frame import FrameParams
from streamstyle.model.layout import reference_layout
from streamstyle.engine_plugins.reference_engine.gbuffers import to_slot
from streamstyle.model.training.evaluate import EvalConfig, Targets, psnr, reference_sequences
from streamstyle.tools.cli import _eval_stylizer

p = argparse.ArgumentParser()
p.add_argument("weights", nargs="+")
p.add_argument("--size", default="128x128")
p.add_argument("--frames", type=int, default=48)
p.add_argument("--switch", type=int, default=8)
p.add_argument("--seed", type=int, default=1000000)
p.add_argument("--styles", default="cel,noir,watercolor,pixelart")
p.add_argument("--json")
a = p.parse_args()
w, h = map(int, a.size.split("x"))
torch.manual_seed(0)
cfg = EvalConfig(seeds=[a.seed], size=(w, h), frames=a.frames)
seq = next(iter(reference_sequences(cfg, torch.device("cpu"))))
styles = a.styles.split(",")
targets = Targets.of(seq.frames, styles)
phr = cfg.prompts
layout = reference_layout(w, h, surface=True)


def run(sty, prompts_at, cut=False):
    s = sty.open_session(w, h, layout, seed=seq.seed)
    outs, slot = [], None
    try:
        for i, f in enumerate(seq.frames):
            if i in prompts_at:
                sty.set_prompt(s, prompts_at[i])
            slot = to_slot(f, layout, slot)
            outs.append(sty.step(s, slot, FrameParams(steps=2, strength=0.5, reset=f.cut or (cut and i in prompts_at))).permute(1, 2, 0).float())
    finally:
        sty.close_session(s)
    return outs


report = {}
for wp in a.weights:
    sty = _eval_stylizer(wp, "cpu")
    r = report[wp] = {}
    for st in styles:
        outs = run(sty, {0: phr[st][0]})
        r[st] = [round(psnr(o, t), 2) for o, t in zip(outs, targets.averaged[st])]
    for x, y in zip(styles, styles[1:] + styles[:1]):
        outs = run(sty, {0: phr[x][0], a.switch: phr[y][0]})
        r[f"{x}->{y}"] = [round(psnr(o, t), 2) for o, t in zip(outs, targets.averaged[y])]
        outs = run(sty, {0: phr[x][0], a.switch: phr[y][0]}, cut=True)
        r[f"{x}->{y} reset"] = [round(psnr(o, t), 2) for o, t in zip(outs, targets.averaged[y])]
    for k, v in r.items():
        q = len(v) // 4
        print(f"{wp:28s} {k:22s} " + " ".join(f"{x:5.1f}" for x in v[: a.switch + 8]) +
              f" | quarters {' '.join(f'{sum(v[i*q:(i+1)*q])/q:5.2f}' for i in range(4))}", flush=True)
if a.json:
    Path(a.json).write_text(json.dumps(report))
