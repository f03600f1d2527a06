"""Session 16: what runs outside a graphed frame's replay, piece by piece (issue 13's speed).

Replays `Stylizer._step`'s graphed branch by hand, one frame at a time with a wait after each, and
times each piece's host time (perf_counter) and, with events around it, its device time: the
slot's size check, the graph look-up, the bind, the load (slot copy), the noise draw, the replay's
launch, the output's guarded copy and the final flag read. Prints p50 in microseconds per size.
"""
import statistics
import sys
import time

import torch

from streamstyle.kernels.writeback import output_bytes
from streamstyle.model.cache import CacheConfig
from streamstyle.model.frame import FrameParams, padded_size
from streamstyle.model.layout import reference_layout
from streamstyle.model.state import StateSpec
from streamstyle.model.stylizer import Stylizer
from streamstyle.model.weights import load_weights, shipped_weights
from streamstyle.tools.bench import cast_model, random_slot

dev = torch.device("cuda")
model = cast_model(load_weights(shipped_weights(), device=dev).eval(), "bf16")
gen = torch.Generator().manual_seed(0)
sizes = [(1280, 720), (1920, 1080), (1920, 1088)]
print(f"{'size':>10} " + " ".join(f"{k:>9}" for k in
      ("check", "lookup", "bind", "load", "noise", "launch", "where", "flag", "pre_replay", "dev_copy", "dev_noise", "dev_where", "wall")))
for w, h in sizes:
    layout = reference_layout(w, h)
    slots = [random_slot(layout, w, h, dev, gen) for _ in range(3)]
    out = torch.empty(output_bytes(w, h, "rgba8"), dtype=torch.uint8, device=dev)
    spec = StateSpec(model.config, *padded_size(model.config, w, h))
    sty = Stylizer(model, device=dev, cuda_graphs=True, cache=CacheConfig(num_pages=CacheConfig().pages_for(spec.numel) + 1))
    s = sty.open_session(w, h, layout, seed=1)
    params = FrameParams(steps=2)
    sty.step_into(s, slots[0], out, "rgba8", params)
    rec = sty._record(s)
    rows = []
    for i in range(205):
        slot = slots[i % 3]
        torch.cuda.synchronize()
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(6)]
        t = [time.perf_counter()]
        sess = rec.session
        sess.layout.check_slot(slot, sess.width, sess.height); t.append(time.perf_counter())
        g = sty._graphs[(sess.layout, sess.width, sess.height, 2, "rgba8")]; t.append(time.perf_counter())
        g.bind(sty.cache.device_table(sess.id)); t.append(time.perf_counter())
        ev[0].record(); g.load(slot, rec.prompt, 0.5, False); ev[1].record(); t.append(time.perf_counter())
        g.noise.normal_(generator=rec.generator); ev[2].record(); t.append(time.perf_counter())
        result, finite = g.replay(); ev[3].record(); t.append(time.perf_counter())
        dst = out[: result.numel()]
        torch.where(finite, result, dst, out=dst); ev[4].record(); t.append(time.perf_counter())
        bool(finite); t.append(time.perf_counter())
        torch.cuda.synchronize()
        if i >= 5:
            d = [t[k + 1] - t[k] for k in range(len(t) - 1)]
            rows.append(d + [t[6] - t[0], ev[0].elapsed_time(ev[1]) / 1e3, ev[1].elapsed_time(ev[2]) / 1e3,
                             ev[3].elapsed_time(ev[4]) / 1e3, t[-1] - t[0]])
    med = [statistics.median(r[k] for r in rows) * 1e6 for k in range(len(rows[0]))]
    print(f"{w}x{h:<5} " + " ".join(f"{m:>9.1f}" for m in med))
    sty.close_session(s)
print("card:", torch.cuda.get_device_name(dev), file=sys.stderr)
