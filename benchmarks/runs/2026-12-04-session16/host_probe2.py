"""Session 16: host time of a graphed frame's pieces before the replay, and cheaper ways to issue
them, one frame at a time with a wait after each (as the service runs). Per size, twice (the first
pass of call 2's probe ran 2x slower than its last: a host that warms up?), p50 us of host time:
the slot copy by torch's copy_ and by the driver (cuMemcpyDtoDAsync on torch's stream), the noise
draw, the replay's launch, the contract's check_slot against a cached size test, and the step's
whole device-event time with the pieces issued each way.
"""
import statistics
import time

import torch
from cuda.bindings import driver as cu

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
print(f"{'size':>10} {'copy_':>7} {'driver':>7} {'noise':>7} {'launch':>7} {'check':>7} {'cached':>7} "
      f"{'step torch':>10} {'step driver':>11}")
for w, h in [(1280, 720), (1920, 1080), (1280, 720), (1920, 1080)]:
    layout = reference_layout(w, h)
    slots = [random_slot(layout, w, h, dev, gen) for _ in range(3)]
    out = torch.empty(output_bytes(w, h, "rgba8"), dtype=torch.uint8, device=dev)
    spec = StateSpec(model.config, *padded_size(model.config, w, h))
    sty = Stylizer(model, device=dev, cuda_graphs=True, cache=CacheConfig(num_pages=CacheConfig().pages_for(spec.numel) + 1))
    s = sty.open_session(w, h, layout, seed=1)
    sty.step_into(s, slots[0], out, "rgba8", FrameParams(steps=2))
    rec = sty._record(s)
    g = sty._graphs[(layout, w, h, 2, "rgba8")]
    n = g.slot.numel()
    need = layout.slot_bytes(w, h)
    stream = torch.cuda.current_stream().cuda_stream
    res = {k: [] for k in ("copy_", "driver", "noise", "launch", "check", "cached", "st", "sd")}
    for i in range(205):
        slot = slots[i % 3]
        for mode in ("t", "d"):
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            t0 = time.perf_counter()
            if mode == "t":
                layout.check_slot(slot, w, h)
            else:
                if slot.numel() < need:
                    raise ValueError
            t1 = time.perf_counter()
            if mode == "t":
                g.slot.copy_(slot[:n], non_blocking=True)
            else:
                err, = cu.cuMemcpyDtoDAsync(g.slot.data_ptr(), slot.data_ptr(), n, stream)
                assert err == cu.CUresult.CUDA_SUCCESS, err
            t2 = time.perf_counter()
            g.noise.normal_(generator=rec.generator)
            t3 = time.perf_counter()
            g.graph.replay()
            t4 = time.perf_counter()
            b.record()
            b.synchronize()
            if i >= 5:
                res["check" if mode == "t" else "cached"].append(t1 - t0)
                res["copy_" if mode == "t" else "driver"].append(t2 - t1)
                res["noise"].append(t3 - t2)
                res["launch"].append(t4 - t3)
                res["st" if mode == "t" else "sd"].append(a.elapsed_time(b) / 1e3)
    m = {k: statistics.median(v) * 1e6 for k, v in res.items()}
    print(f"{w}x{h:<5} {m['copy_']:>7.1f} {m['driver']:>7.1f} {m['noise']:>7.1f} {m['launch']:>7.1f} "
          f"{m['check']:>7.1f} {m['cached']:>7.1f} {m['st']:>10.1f} {m['sd']:>11.1f}")
    sty.close_session(s)
print("card:", torch.cuda.get_device_name(dev))
