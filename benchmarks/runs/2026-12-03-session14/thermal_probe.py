"""Where thermal's error sits: the shipped model on the first held-out scene (seed 1,000,000,
256x256, 8 frames, thermal's held-out phrasings, CPU float32): the error by region (sky, ground,
objects), by object id, and the frame-to-frame change where the oracle does not change.
Usage (repository root): python benchmarks/runs/2026-12-03-session14/thermal_probe.py [WEIGHTS]
"""
import sys

import torch

from streamstyle.engine_plugins.reference_engine.gbuffers import to_slot
from streamstyle.engine_plugins.reference_engine.oracles import STYLES
from streamstyle.model.frame import FrameParams
from streamstyle.model.layout import reference_layout
from streamstyle.model.training.evaluate import EvalConfig, reference_sequences
from streamstyle.tools.cli import _eval_stylizer

weights = sys.argv[1] if len(sys.argv) > 1 else "default"
size = 256
cfg = EvalConfig(seeds=[1000000], size=(size, size), frames=8)
seq = next(iter(reference_sequences(cfg, torch.device("cpu"))))
layout = reference_layout(size, size, surface=True)
sty = _eval_stylizer(weights, "cpu")
for style in sys.argv[2:] or ["thermal"]:
  for prompt in cfg.prompts[style][:2]:
    s = sty.open_session(size, size, layout, seed=seq.seed)
    sty.set_prompt(s, prompt)
    slot, outs = None, []
    for f in seq.frames:
        slot = to_slot(f, layout, slot)
        out = sty.step(s, slot, FrameParams(steps=2, strength=0.5, reset=f.cut))
        outs.append(out.float().permute(1, 2, 0).clone())
    sty.close_session(s)
    f = seq.frames[-1]
    tgt = STYLES[style](f)
    o = outs[-1]
    o = o[:size, :size]
    err = (o - tgt).abs().mean(-1)
    ids = f.ids[..., 0].long()
    print(f"{style} '{prompt}': psnr {float(-10 * torch.log10(((o - tgt) ** 2).mean())):.2f}")
    for i in ids.unique().tolist():
        m = ids == i
        print(f"  id {i:3d}: {int(m.sum()):6d} px  err {float(err[m].mean()):.3f}  out {[round(float(v), 2) for v in o[m].mean(0)]}  "
              f"tgt {[round(float(v), 2) for v in tgt[m].mean(0)]}  out sd {float(o[m].std(0).mean()):.3f} tgt sd {float(tgt[m].std(0).mean()):.3f}")
