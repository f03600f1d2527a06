"""How much valid history the shipped refiner keeps: the mean of sigmoid(confidence logit) over the
pixels whose history is valid, frame by frame, on tests/test_state_dtypes.py's pan (96x64, 8
frames of random G-buffers, fractional motion, 2 steps, strength 0.5, CPU, float32), then per style
on the first held-out scene (seed 1,000,000, 128x128, 8 frames, each style's first held-out
phrasing, as `streamstyle eval` runs it), for each checkpoint given.
Usage (repository root): python benchmarks/runs/2026-12-03-session13/gate_probe.py WEIGHTS...
"""

import sys

import torch

import streamstyle.model.refiner as refiner_module
from streamstyle.kernels.refiner.reference import _conv3x3_silu
from streamstyle.model.frame import FrameParams
from streamstyle.model.layout import reference_layout
from streamstyle.model.stylizer import Stylizer
from streamstyle.model.weights import load_weights
from streamstyle.engine_plugins.reference_engine.gbuffers import to_slot
from streamstyle.model.training.evaluate import EvalConfig, reference_sequences
from streamstyle.tests.conftest import make_frame
from streamstyle.tools.cli import _eval_stylizer

gates: list[float] = []
original = refiner_module.refine_composite


def probe(y, x, w3, b3, cond, w1, b1, base_ch, hist_ch, mask_ch, *args, **kw):
    z = _conv3x3_silu(y.float(), w3.float(), b3.float(), None if cond is None else cond.float())
    logit = torch.nn.functional.linear(z, w1.float(), b1.float())[..., 3]
    m = x[..., mask_ch].float() > 0.5
    if m.any():
        gates.append(float(torch.sigmoid(logit)[m].mean()))
    return original(y, x, w3, b3, cond, w1, b1, base_ch, hist_ch, mask_ch, *args, **kw)


refiner_module.refine_composite = probe
for weights in sys.argv[1:]:
    model = load_weights(weights).eval()
    gen = torch.Generator().manual_seed(0)
    w, h, n, speed = 96, 64, 8, 3
    layout = reference_layout(w + speed * n, h)
    base = make_frame(layout, w + speed * n, h, gen)
    sty = Stylizer(model)
    s = sty.open_session(w, h, reference_layout(w, h), seed=2)
    gates.clear()
    for i in range(n):
        f = {k: v[:, speed * i:speed * i + w].contiguous() for k, v in base.items()}
        motion = torch.zeros(h, w, 2, dtype=torch.float16)
        motion[..., 0], motion[..., 1] = (2.6, 0.3) if i else (0.0, 0.0)
        f["motion"] = motion
        sty.step(s, f, FrameParams(steps=2, strength=0.5))
    print(f"{weights}: gate over valid history by frame {' '.join(f'{g:.4f}' for g in gates)}; "
          f"mean {sum(gates) / max(1, len(gates)):.4f}")

cfg = EvalConfig(seeds=[1000000], size=(128, 128), frames=8)
seq = next(iter(reference_sequences(cfg, torch.device("cpu"))))
layout = reference_layout(128, 128, surface=True)
for weights in sys.argv[1:]:
    sty = _eval_stylizer(weights, "cpu")
    row = []
    for style in ("cel", "pencil", "watercolor", "oilpaint", "thermal", "noir"):
        s = sty.open_session(128, 128, layout, seed=seq.seed)
        sty.set_prompt(s, cfg.prompts[style][0])
        gates.clear()
        slot = None
        for f in seq.frames:
            slot = to_slot(f, layout, slot)
            sty.step(s, slot, FrameParams(steps=2, strength=0.5, reset=f.cut))
        sty.close_session(s)
        row.append(f"{style} {sum(gates) / max(1, len(gates)):.3f}")
    print(f"{weights}: held-out scene, mean gate over valid history: {', '.join(row)}")
