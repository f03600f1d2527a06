"""Time the refiner's two fused Triton stages against their reference (cuDNN, channels-last).

Per size (default 1280x720, 1920x1088, 3840x2160), bf16, Cin = C1 = C2 = 32, one frame, the slot
written as RGBA8 (what the service runs):
- check first: both stages of the kernels and of the bf16 reference against the float32 reference
  on the same bf16 inputs and weights; a size whose kernels fail is reported FAILED and not timed;
- time stage 1 + stage 2, eager and replayed from one CUDA graph, for the kernels and for the
  reference: CUDA events around each call, median of --iters (200) after warm-up; by default L2 is
  flushed before each timed call (a 256 MiB write outside the events: in the service, other passes
  evict the refiner's inputs), `--warm-l2` keeps it;
- effective bandwidth: the bytes the pair must move at least (read x, write and read y, read the
  seven composite channels of x, write planar float32 RGB and the RGBA8 slot) over its time, beside
  this card's device-to-device copy bandwidth measured in the same run;
- with `--sweep`, each stage alone over tile shapes and warp counts (graph replays), the best
  marked.
With `--features`, the refiner's input assembly instead (`kernels/refiner_features`, the 32
channels of x the stages read): the fused kernel against its reference (the PyTorch op chain the
model ran before it), on the inputs as the frame hands them over (float32 latent, history and
mask, the guide a float32 channel range of the packed planes, int32 ids and RGBA16F surface as
strided views of slot planes, bf16 id table and surface Linear); checked first (kernel against
reference: the guide, history, mask, position and id channels bit for bit, the upsample within one
bf16 unit, the surface features within one unit at >= 99.99% of values), then both timed eager and
graphed, with the kernel's bytes over its graphed time beside the copy bandwidth; `--sweep` adds
pixels per program x warps.
Prints tables; `--json FILE` writes every figure.

    python benchmarks/bench_refiner.py --sweep
    python benchmarks/bench_refiner.py --size 1920x1088 --iters 500 --json refiner.json
    python benchmarks/bench_refiner.py --features --sweep --json features.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from streamstyle.kernels.refiner import conv3x3_mlp_reference, refine_composite_reference
from streamstyle.kernels.refiner import triton_kernel as tk
from streamstyle.kernels.refiner_features import ID_BUCKETS, feature_channels, refiner_features_reference
from streamstyle.kernels.refiner_features import triton_kernel as fk

SIZES = [(1280, 720), (1920, 1088), (3840, 2160)]
CIN = C1 = C2 = 32
BASE_CH, HIST_CH, MASK_CH = 0, 3, 6
# (tile rows, tile columns, warps): row strips, squares and wide tiles around the default
SWEEP = [(1, 64, 4), (1, 128, 4), (2, 64, 4), (4, 32, 4), (8, 16, 4), (4, 64, 4), (8, 32, 4), (8, 32, 8),
         (16, 16, 4), (16, 16, 8), (16, 32, 8), (8, 64, 8)]


class Timer:
    """Median device time of a call (ms), CUDA events around each one, optionally after an L2 flush."""

    def __init__(self, iters: int, warmup: int, flush_l2: bool):
        self.iters, self.warmup = iters, warmup
        self.flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda") if flush_l2 else None

    def __call__(self, fn) -> float:
        for _ in range(self.warmup):
            fn()
        pairs = []
        for _ in range(self.iters):
            if self.flush is not None:
                self.flush.fill_(1)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            pairs.append((start, end))
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in pairs)


def graphed(fn):
    """`fn` captured once in a CUDA graph (after a warm-up on a side stream); returns its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    torch.cuda.synchronize()
    return g.replay


def copy_bandwidth(timer: Timer) -> float:
    """Device-to-device copy, GB/s (read + write), 1 GiB."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    return 2 * (1 << 30) / ms / 1e6


def min_bytes(w: int, h: int) -> int:
    px = w * h
    return px * (CIN * 2 + C2 * 2) + px * (C2 * 2 + 7 * 2 + 3 * 4 + 4)


class Case:
    """One frame's inputs, weights (bf16 and their float32 copies), packed weights and outputs."""

    def __init__(self, w: int, h: int, gen: torch.Generator):
        self.w, self.h = w, h
        x = torch.rand(1, h, w, CIN, generator=gen) * 2 - 1
        x[..., MASK_CH] = torch.rand(1, h, w, generator=gen)
        self.x = x.cuda().bfloat16()

        def t(*shape, scale):
            return (torch.randn(*shape, generator=gen) * scale).cuda().bfloat16()

        self.s1 = [t(C1, CIN, 3, 3, scale=0.6 / CIN ** 0.5), t(C1, scale=0.2), t(1, C1, scale=0.5),
                   t(C2, C1, scale=1 / C1 ** 0.5), t(C2, scale=0.1)]
        self.s2 = [t(C1, C2, 3, 3, scale=0.6 / C2 ** 0.5), t(C1, scale=0.2), t(1, C1, scale=0.5),
                   t(4, C1, scale=0.15 / C1 ** 0.5), t(4, scale=0.1)]
        w3, b3, _, w1, b1 = self.s1
        self.p1 = tk.pack_conv3x3_mlp(w3, b3, w1, b1, torch.bfloat16)
        w3, b3, _, w1, b1 = self.s2
        self.p2 = tk.pack_refine(w3, b3, w1, b1, torch.bfloat16)
        self.y = torch.empty(1, h, w, C2, dtype=torch.bfloat16, device="cuda")
        self.rgb = torch.empty(1, 3, h, w, device="cuda")
        self.slot = torch.empty(w * h * 4, dtype=torch.uint8, device="cuda")

    def stage1(self, tile=None, warps=tk.NUM_WARPS):
        tk.conv3x3_mlp_triton(self.x, self.p1, self.s1[2], True, out_y=self.y, tile=tile, num_warps=warps)

    def stage2(self, tile=None, warps=tk.NUM_WARPS):
        tk.refine_composite_triton(self.y, self.x, self.p2, self.s2[2], BASE_CH, HIST_CH, MASK_CH, self.w, self.h,
                                   self.slot, "rgba8", out_rgb=self.rgb, tile=tile, num_warps=warps)

    def kernels(self):
        self.stage1()
        self.stage2()

    def reference(self, dtype=torch.bfloat16):
        f = [t.to(dtype) for t in self.s1], [t.to(dtype) for t in self.s2]
        y = conv3x3_mlp_reference(self.x.to(dtype), *f[0])
        return y, refine_composite_reference(y, self.x.to(dtype), *f[1], BASE_CH, HIST_CH, MASK_CH, self.w, self.h,
                                             self.slot, "rgba8")


def check(case: Case) -> dict:
    """Both stages against the float32 reference on the same bf16 inputs and weights."""
    with torch.no_grad():
        y32, rgb32 = case.reference(torch.float32)
        yb, rgbb = case.reference(torch.bfloat16)
        case.y.fill_(float("nan"))
        case.rgb.fill_(float("nan"))
        case.stage1()
        y_err = ((case.y.float() - y32).abs().max() / y32.abs().max()).item()
        case.stage2()  # on the kernel's own y
        rgb_on_y = refine_composite_reference(case.y.float(), case.x.float(), *[t.float() for t in case.s2],
                                              BASE_CH, HIST_CH, MASK_CH)
        rgb_err = (case.rgb - rgb_on_y).abs().max().item()
        chain_err = (case.rgb - rgb32).abs().max().item()
    row = {"y_rel_err": y_err, "rgb_err": rgb_err, "chain_rgb_err": chain_err,
           "ref_bf16_y_rel_err": ((yb.float() - y32).abs().max() / y32.abs().max()).item(),
           "ref_bf16_chain_rgb_err": (rgbb - rgb32).abs().max().item()}
    finite = bool(torch.isfinite(case.y.float()).all() and torch.isfinite(case.rgb).all())
    row["ok"] = finite and y_err < 2e-2 and rgb_err < 1e-2 and chain_err < 5e-2
    return row


GUIDE, IDS, SURFACE = 10, 3, 4  # the default model's guide channels, id embedding, Fourier features
FEATURE_SWEEP = [(64, 4), (128, 4), (256, 4), (256, 8), (512, 8), (1024, 8)]  # (pixels per program, warps)


class FeaturesCase:
    """One frame's refiner inputs as `stylize_frame` hands them to `Refiner.features`, and x."""

    def __init__(self, w: int, h: int, gen: torch.Generator):
        self.w, self.h = w, h
        lay = feature_channels(GUIDE, IDS, SURFACE)
        self.lay = lay
        packed = torch.randn(1, GUIDE + 2, h, w, generator=gen)  # the pack's full-resolution planes
        ids = torch.randint(0, 1 << 20, (1, h, w, 1), generator=gen, dtype=torch.int32)
        rgba = (torch.randn(1, h, w, 4, generator=gen) * 1.5).half()
        self.args = dict(
            latent=(torch.rand(1, 3, h // 4, w // 4, generator=gen) * 2 - 1).cuda(),
            guide=packed.cuda()[:, :GUIDE], history=torch.rand(1, 3, h, w, generator=gen).cuda(),
            mask=(torch.rand(1, 1, h, w, generator=gen) > 0.3).float().cuda(), ids=ids.cuda()[..., 0],
            surface=rgba.cuda()[..., :3],
            id_table=(torch.randn(ID_BUCKETS, IDS, generator=gen) * 0.5).cuda().bfloat16(),
            surface_weight=(torch.randn(SURFACE, 3, generator=gen) * 3).cuda().bfloat16(),
            surface_bias=torch.rand(SURFACE, generator=gen).cuda().bfloat16())
        self.x = torch.empty(1, h, w, lay.total, dtype=torch.bfloat16, device="cuda")

    def _call(self, fn, **kw):
        a = self.args
        return fn(a["latent"], a["guide"], a["history"], a["mask"], a["ids"], a["surface"], a["id_table"],
                  a["surface_weight"], a["surface_bias"], 4, self.w, self.h, torch.bfloat16, **kw)

    def fused(self, block=fk.BLOCK, warps=fk.NUM_WARPS):
        self._call(fk.refiner_features_triton, out=self.x, block=block, num_warps=warps)

    def reference(self):
        return self._call(refiner_features_reference)

    def min_bytes(self) -> int:
        """What the kernel must move per frame: read guide (float32), history, mask, ids, the
        surface's 8-byte RGBA16F pixels and the latent; write x (bf16)."""
        px = self.w * self.h
        return px * (GUIDE * 4 + 3 * 4 + 4 + 4 + 8 + self.lay.total * 2) + px // 16 * 3 * 4


def check_features(case: FeaturesCase) -> dict:
    """The kernel against the reference, both on this GPU in bf16 (the test suite's criteria)."""
    with torch.no_grad():
        want = case.reference()
        case.x.fill_(float("nan"))
        case.fused()
        got = case.x
    lay = case.lay
    d = (got.float() - want.float()).abs()
    exact = all(torch.equal(got[..., a:b], want[..., a:b]) for a, b in
                ((lay.guide, lay.hist), (lay.hist, lay.mask), (lay.mask, lay.position), (lay.position, lay.ids),
                 (lay.ids, lay.surface)))
    unit = torch.exp2(torch.floor(torch.log2(want.float().abs().clamp_min(1e-30))) - 7)  # one bf16 ulp
    ulps = d / unit
    base_ulps = ulps[..., :lay.guide].max().item()
    surface_within = (ulps[..., lay.surface:] <= 1).float().mean().item()
    row = {"exact_channels": exact, "base_max_ulps": base_ulps, "surface_within_1ulp": surface_within,
           "max_abs_err": d.max().item()}
    row["ok"] = bool(torch.isfinite(got.float()).all()) and exact and base_ulps <= 1 and surface_within >= 0.9999
    return row


def run_features(sizes, timer: Timer, sweep: bool, report: dict) -> None:
    gen = torch.Generator().manual_seed(0)
    for w, h in sizes:
        case = FeaturesCase(w, h, gen)
        row = {"size": f"{w}x{h}", "min_bytes": case.min_bytes(), **check_features(case)}
        print(json.dumps(row), flush=True)
        if row["ok"]:
            with torch.no_grad():
                row["fused_ms"] = timer(case.fused)
                row["fused_graph_ms"] = timer(graphed(case.fused))
                row["reference_ms"] = timer(case.reference)
                row["reference_graph_ms"] = timer(graphed(case.reference))
                if sweep:
                    row["sweep"] = [{"block": bl, "warps": nw, "ms": timer(graphed(lambda: case.fused(bl, nw)))}
                                    for bl, nw in FEATURE_SWEEP]
        report["features"].append(row)
        case = None
        torch.cuda.empty_cache()


def format_features(r: dict) -> str:
    lines = [f"\nRefiner input assembly (x: {feature_channels(GUIDE, IDS, SURFACE).total} channels, bf16), one frame, "
             f"on {r['device']} (triton {r['triton']}, torch {r['torch']}); median of {r['iters']}, "
             f"L2 {'flushed' if r['flush_l2'] else 'warm'}; block {fk.BLOCK} pixels, {fk.NUM_WARPS} warps; "
             f"copy bandwidth {r['copy_gbps']:.0f} GB/s",
             f"{'size':>10} {'fused':>8} {'graph':>8} {'ref':>8} {'ref graph':>9} {'saved':>8} {'speedup':>7} "
             f"{'GB/s':>6} {'of copy':>7} {'base ulp':>8} {'surf<=1ulp':>10}"]
    for s in r["features"]:
        if not s["ok"]:
            lines.append(f"{s['size']:>10}  FAILED correctness (exact channels {s['exact_channels']}, base "
                         f"{s['base_max_ulps']:.0f} ulp, surface {s['surface_within_1ulp']:.5f}): not timed")
            continue
        gbps = s["min_bytes"] / s["fused_graph_ms"] / 1e6
        lines.append(f"{s['size']:>10} {s['fused_ms']:>8.3f} {s['fused_graph_ms']:>8.3f} {s['reference_ms']:>8.3f} "
                     f"{s['reference_graph_ms']:>9.3f} {s['reference_graph_ms'] - s['fused_graph_ms']:>8.3f} "
                     f"{s['reference_graph_ms'] / s['fused_graph_ms']:>6.1f}x {gbps:>6.0f} {gbps / r['copy_gbps']:>6.0%} "
                     f"{s['base_max_ulps']:>8.0f} {s['surface_within_1ulp']:>10.5f}")
    lines.append("(ms; 'graph' columns replay one CUDA graph; saved = reference graph - fused graph; GB/s = the "
                 "kernel's minimum bytes over its graphed time; base ulp: the upsample's largest error in bf16 units; "
                 "surf<=1ulp: share of surface features within one bf16 unit)")
    for s in r["features"]:
        if "sweep" not in s:
            continue
        best = min(s["sweep"], key=lambda c: c["ms"])
        lines.append(f"\nblock sweep at {s['size']} (graph replays, ms)")
        lines.append(f"{'pixels':>6} {'warps':>5} {'ms':>8}")
        for c in s["sweep"]:
            lines.append(f"{c['block']:>6} {c['warps']:>5} {c['ms']:>8.3f}{'  <- best' if c is best else ''}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", action="append", help="WxH (repeatable); default 1280x720, 1920x1088, 3840x2160")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--warm-l2", action="store_true", help="do not flush L2 before each timed call")
    ap.add_argument("--sweep", action="store_true", help="time each stage over tile shapes and warp counts")
    ap.add_argument("--features", action="store_true",
                    help="time the input assembly (kernels/refiner_features) instead of the two stages")
    ap.add_argument("--json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_refiner: needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.size] if args.size else SIZES
    timer = Timer(args.iters, args.warmup, not args.warm_l2)
    gen = torch.Generator().manual_seed(0)
    report = {"device": torch.cuda.get_device_name(), "triton": __import__("triton").__version__,
              "torch": torch.__version__, "iters": args.iters, "flush_l2": not args.warm_l2,
              "default_tile": [tk.TILE_H, tk.TILE_W, tk.NUM_WARPS], "copy_gbps": copy_bandwidth(timer), "sizes": []}
    if args.features:
        report["features"] = []
        run_features(sizes, timer, args.sweep, report)
        print(format_features(report))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
        return 0 if all(r["ok"] for r in report["features"]) else 1
    for w, h in sizes:
        case = Case(w, h, gen)
        row = {"size": f"{w}x{h}", "min_bytes": min_bytes(w, h), **check(case)}
        print(json.dumps(row), flush=True)
        if row["ok"]:
            with torch.no_grad():
                row["kernels_ms"] = timer(case.kernels)
                row["kernels_graph_ms"] = timer(graphed(case.kernels))
                row["stage1_ms"] = timer(case.stage1)
                row["stage2_ms"] = timer(case.stage2)
                row["reference_ms"] = timer(case.reference)
                row["reference_graph_ms"] = timer(graphed(case.reference))
                if args.sweep:
                    row["sweep"] = []
                    for th, tw, nw in SWEEP:
                        s1 = timer(graphed(lambda: case.stage1((th, tw), nw)))
                        s2 = timer(graphed(lambda: case.stage2((th, tw), nw)))
                        row["sweep"].append({"tile": [th, tw], "warps": nw, "stage1_ms": s1, "stage2_ms": s2})
        report["sizes"].append(row)
        case = None  # frees this size's buffers before the next
        torch.cuda.empty_cache()
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if all(r["ok"] for r in report["sizes"]) else 1


def format_report(r: dict) -> str:
    lines = [f"\nRefiner stages 1 + 2, bf16, Cin=C1=C2=32, one frame + RGBA8 slot, on {r['device']} "
             f"(triton {r['triton']}, torch {r['torch']}); median of {r['iters']}, "
             f"L2 {'flushed' if r['flush_l2'] else 'warm'}; default tile {r['default_tile'][0]}x"
             f"{r['default_tile'][1]}, {r['default_tile'][2]} warps; copy bandwidth {r['copy_gbps']:.0f} GB/s",
             f"{'size':>10} {'kernels':>8} {'graph':>8} {'stage1':>8} {'stage2':>8} {'ref':>8} {'ref graph':>9} "
             f"{'speedup':>7} {'GB/s':>6} {'of copy':>7} {'y err':>8} {'rgb err':>8}"]
    for s in r["sizes"]:
        if not s["ok"]:
            lines.append(f"{s['size']:>10}  FAILED correctness (y {s['y_rel_err']:.1e}, rgb {s['rgb_err']:.1e}, "
                         f"chain {s['chain_rgb_err']:.1e}): not timed")
            continue
        gbps = s["min_bytes"] / s["kernels_graph_ms"] / 1e6
        lines.append(f"{s['size']:>10} {s['kernels_ms']:>8.3f} {s['kernels_graph_ms']:>8.3f} {s['stage1_ms']:>8.3f} "
                     f"{s['stage2_ms']:>8.3f} {s['reference_ms']:>8.3f} {s['reference_graph_ms']:>9.3f} "
                     f"{s['reference_graph_ms'] / s['kernels_graph_ms']:>6.1f}x {gbps:>6.0f} "
                     f"{gbps / r['copy_gbps']:>6.0%} {s['y_rel_err']:>8.1e} {s['rgb_err']:>8.1e}")
    lines.append("(ms; 'graph' columns replay one CUDA graph; GB/s = the pair's minimum bytes over the "
                 "graphed kernels' time; y err relative to max |y|, rgb err absolute, both against float32 on the same "
                 "bf16 inputs; the bf16 reference's own: see --json)")
    for s in r["sizes"]:
        if "sweep" not in s:
            continue
        best = min(s["sweep"], key=lambda c: c["stage1_ms"] + c["stage2_ms"])
        lines.append(f"\ntile sweep at {s['size']} (graph replays, ms)")
        lines.append(f"{'tile':>7} {'warps':>5} {'stage1':>8} {'stage2':>8} {'sum':>8}")
        for c in s["sweep"]:
            mark = "  <- best" if c is best else ""
            lines.append(f"{c['tile'][0]:>3}x{c['tile'][1]:<3} {c['warps']:>5} {c['stage1_ms']:>8.3f} "
                         f"{c['stage2_ms']:>8.3f} {c['stage1_ms'] + c['stage2_ms']:>8.3f}{mark}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
