"""Session 17: the Mix-FFN conv + gate kernel, old (nine taps from L2 per element) against the
strip-walking one at each tile / strip height / warp count, graph-timed at the three token grids
of 720p, 1080p and 4K with the shipped model's first block's weights; the fastest config's error
against the float32 reference at 1080p. Prints a table, writes sweep.json to $OUT."""
import importlib.util
import json
import os
import sys

import torch

sys.path.insert(0, "benchmarks")
from profile_step import kernel_ms, sweep_mixffn  # noqa: E402
from streamstyle.kernels.mixffn import triton_kernel as mk  # noqa: E402
from streamstyle.kernels.mixffn.reference import dwconv_gate as ref  # noqa: E402
from streamstyle.model.weights import load_weights, shipped_weights  # noqa: E402
from streamstyle.tools.bench import cast_model  # noqa: E402

here = os.path.dirname(__file__)
spec = importlib.util.spec_from_file_location("old_mixffn", os.path.join(here, "old_mixffn.py"))
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
dev = torch.device("cuda")
model = cast_model(load_weights(shipped_weights(), device=dev).eval(), "bf16")
cfg = model.config
ffn = model.dit.blocks[0].ffn
res = {}
for w, h in ((1280, 720), (1920, 1088), (3840, 2160)):
    th, tw = h // cfg.patch, w // cfg.patch
    e = torch.randn(1, th * tw, 2 * cfg.hidden, device=dev, dtype=torch.bfloat16)
    o = kernel_ms(lambda: old.dwconv_gate_triton(e, (th, tw), ffn.dw.weight, ffn.dw.bias), dev)
    new = sweep_mixffn(model, w, h, dev)
    res[f"{w}x{h}"] = {"old": o, "new": new}
# the config fastest summed over the three grids
labels = [k for k in res["1920x1088"]["new"] if k != "shipped"]
best = min(labels, key=lambda k: sum(r["new"][k] for r in res.values()))
print(" grid        old ms   new shipped   best " + best)
for k, r in res.items():
    print(f" {k:10s} {r['old']*1e3:8.1f}us {r['new']['shipped']*1e3:8.1f}us {r['new'][best]*1e3:8.1f}us")
bw, rest = best.split("x", 1)
bc, rest = rest.split("x")
rows, nw = rest.split("/")
mk.BLOCK_W, mk.BLOCK_C, mk.ROWS, mk.NUM_WARPS = int(bw), int(bc), int(rows), int(nw)
e = torch.randn(1, 68 * 120, 2 * cfg.hidden, device=dev, dtype=torch.bfloat16)
got = mk.dwconv_gate_triton(e, (68, 120), ffn.dw.weight, ffn.dw.bias).float()
want = ref(e.float(), (68, 120), ffn.dw.weight.float(), ffn.dw.bias.float())
err = (got - want).abs()
print(f" best {best}: max err {err.max().item():.3g} (max |ref| {want.abs().max().item():.3g}), mean {err.mean().item():.3g}")
res["best"] = best
res["best_err"] = [err.max().item(), err.mean().item()]
top = sorted(labels, key=lambda k: sum(r["new"][k] for r in res.values() if isinstance(r, dict)))[:8]
for k in top:
    print(f"  {k:14s} " + " ".join(f"{res[s]['new'][k]*1e3:7.1f}" for s in ("1280x720", "1920x1088", "3840x2160")))
json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "sweep.json"), "w"), indent=1)
with open(os.path.join(os.environ.get("OUT", "/tmp"), "best.txt"), "w") as f:
    f.write(f"{bw} {bc} {rows} {nw}\n")

# Cross-attention and the linear attention's partial sums: tokens per program and warps.
from profile_step import sweep, sweep_linear_attention  # noqa: E402
from streamstyle.kernels.cross_attention import triton_kernel as ck  # noqa: E402

print(" cross-attention (us per call, 720p / 1088p / 4K); linear attention chunk blocks")
xres = {}
for w, h in ((1280, 720), (1920, 1088), (3840, 2160)):
    t = (h // cfg.patch) * (w // cfg.patch)
    q = torch.randn(1, t, cfg.heads, cfg.head_dim, device=dev, dtype=torch.bfloat16).transpose(1, 2)
    k, v = (torch.randn(1, cfg.context_tokens, cfg.heads, cfg.head_dim, device=dev,
                        dtype=torch.bfloat16).transpose(1, 2) for _ in range(2))
    bias = torch.zeros(1, cfg.context_tokens, device=dev)
    bias[:, 20:32] = float("-inf")
    xres[f"{w}x{h}"] = {
        "cross": sweep(ck, ("BLOCK_T", "NUM_WARPS"), [(b, nw) for b in (32, 64, 128, 256) for nw in (2, 4, 8)],
                       lambda: ck.cross_attention_triton(q, k, v, bias), dev, label=lambda c: f"{c[0]}/{c[1]}"),
        "linattn": sweep_linear_attention(model, w, h, dev)}
for kind in ("cross", "linattn"):
    for lab in xres["1920x1088"][kind]:
        print(f"  {kind:8s} {str(lab):8s} " + " ".join(f"{xres[s][kind][lab]*1e3:7.1f}" for s in xres))
json.dump(xres, open(os.path.join(os.environ.get("OUT", "/tmp"), "sweep-attn.json"), "w"), indent=1)
