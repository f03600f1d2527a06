"""`streamstyle eval`: fidelity, temporal stability and prompt adherence, through the per-frame
path the service runs (frames written into the engine's slot format, `Stylizer.step`).

Per frame size, scene and style (a phrasing from the held-out split, or a prompts file), N frames
along a handheld camera path are stylized twice: as the service does (temporal state, warped
history) and by a per-frame baseline (same steps, every frame a reset from noise, nothing carried).
Every metric is computed for both. The metrics the project has always reported are computed exactly
as they always were, so that no target is met by changing a metric:
- `psnr`, `ssim`: against the oracle; for styles whose detail is attached to surfaces the model
  cannot see (`SURFACE_ATTACHED`), both images are low-passed first (Gaussian, 2 px at every size);
- `warp_ratio`: the mean warp error between consecutive outputs on pixels visible in both frames
  (exact motion vectors, depth-test occlusion), over the oracle's own;
- `adherence`: the share of frames whose output is nearer (low-passed, L2) to the oracle of the
  asked style than to any other style's oracle.
Beside them, what a target is read against:
- `fidelity_psnr`, `fidelity_ssim`: against the averaged oracle (oracles.averaged_oracle: the
  detail the model cannot predict averaged out), no low-pass;
- `ceiling_psnr`, `ceiling_ssim`, `ceiling_psnr_scaled`: the score of the best possible prediction
  (the averaged oracle itself) on `psnr`, `ssim` and `psnr_scaled`: what is reachable there
  (the 100 dB cap where the target has no hidden detail);
- `psnr_scaled`: `psnr` with the low-pass scaled with the frame (sigma = 2 px x height / 512);
- `adherence_margin`: per frame (d_other - d_asked) / max(d_other, d_asked), d the low-passed RMS
  distances to the asked style's oracle and to the nearest other style's: the share by which the
  asked oracle is nearer, positive when it is the nearest (up to 1), negative when not (down to -1);
- `warp_ratio_lowpass`: the warp ratio with outputs and oracles low-passed (scaled sigma), the
  detail-free view; the report also gives the median over styles of both warp ratios;
- `fullres_baseline_factor` (pencil, watercolor, oilpaint): the per-frame baseline's warp error on
  full-resolution output over ours: how much steadier history keeps free detail;
- `token_grid`: the RMS, in 8-bit levels, of the error's (output less averaged oracle) pattern at
  the model's token stride, averaged over the sequence's frames first (losses.token_grid): the
  faint grid of the DiT's patch seams on flat areas. Content not locked to the grid averages out,
  so the averaged oracle scores 0 and a grid drawn over every cell scores its own amplitude.

The frames come from a source of sequences (`Sequence`: a name, a seed, rendered frames). The
held-out set's source is the reference engine at held-out seeds (`reference_sequences`); the real
set's is a real engine (tools/real_eval.py: Panda3D on real scenes, the oracles applied to its
G-buffers). Every source goes through the same `evaluate`: one computation, other data. The report
holds one entry per frame size under `sizes`; its top-level `size`, `styles` and `overall` are the
largest size's, as in reports written before there were several.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ...engine_plugins.reference_engine import CameraPath, Renderer, Scene
from ...engine_plugins.reference_engine.gbuffers import to_slot
from ...engine_plugins.reference_engine.oracles import HIDDEN_DETAIL, STYLES, SURFACE_ATTACHED, averaged_oracle
from ...engine_plugins.reference_engine.prompts import split
from ...kernels.warp import warp_previous
from ..config import ModelConfig
from ..frame import FrameParams
from ..layout import reference_layout
from ..stylizer import Stylizer
from .losses import token_grid
from .trainer import TrainConfig


def _chw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(2, 0, 1).unsqueeze(0).float()


def lowpass(img: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Gaussian blur of [H, W, C]."""
    r = max(1, int(3 * sigma))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32, device=img.device) ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    x = _chw(img)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x[0].permute(1, 2, 0)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = F.mse_loss(a.float(), b.float()).item()
    return 100.0 if mse <= 1e-10 else 10 * math.log10(1.0 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM of the luminance of [H, W, 3] images in [0, 1] (Gaussian window, sigma 1.5)."""
    w = torch.tensor([0.2126, 0.7152, 0.0722], device=a.device)
    x, y = (a.float() * w).sum(-1, keepdim=True), (b.float() * w).sum(-1, keepdim=True)
    mx, my = lowpass(x, 1.5), lowpass(y, 1.5)
    vx = lowpass(x * x, 1.5) - mx * mx
    vy = lowpass(y * y, 1.5) - my * my
    cxy = lowpass(x * y, 1.5) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


LOWPASS_SIGMA = 2.0  # px: `psnr`/`ssim`'s low-pass of the surface-attached styles, the same at every size
ADHERENCE_SIGMA = 3.0  # px: the low-pass before the nearest-oracle distances
SCALE_HEIGHT = 512  # `psnr_scaled`'s sigma is LOWPASS_SIGMA at this frame height, in proportion elsewhere
# Free detail (strokes, grain, brush marks) that only history keeps steady: judged on full-resolution
# output against the per-frame baseline. Blueprint's grid is surface-attached too, but thin lines on
# flat fill, not texture; the target names these three.
FULLRES_STYLES = ("pencil", "watercolor", "oilpaint")
# The training size and twice it.
DEFAULT_SIZES = ((TrainConfig.size, TrainConfig.size), (2 * TrainConfig.size, 2 * TrainConfig.size))
# Warp ratios whose median over styles the overall row gives beside the mean (thermal's near-static
# oracle makes its ratio large, which moves the mean far more than the median).
MEDIAN_KEYS = ("warp_ratio", "warp_ratio_lowpass", "baseline_warp_ratio", "baseline_warp_ratio_lowpass")
# Not averaged over styles: a style without hidden detail has the 100 dB cap as its PSNR ceiling,
# and a mean of caps and real ceilings reads as neither.
NOT_AVERAGED = ("ceiling_psnr", "ceiling_psnr_scaled")


def scaled_sigma(height: int) -> float:
    """`psnr_scaled`'s and `warp_ratio_lowpass`'s low-pass (px) at a frame `height`."""
    return LOWPASS_SIGMA * height / SCALE_HEIGHT


def warp_errors(outputs: list[torch.Tensor], frames) -> list[float]:
    """Mean absolute difference between output t and output t-1 warped by frame t's exact motion,
    on pixels visible in both (depth test), for t = 1..N-1 (cuts skipped)."""
    errs = []
    for t in range(1, len(outputs)):
        cur, prev = frames[t], frames[t - 1]
        if cur.cut:
            continue
        warped, valid = warp_previous(_chw(outputs[t - 1]), _chw(prev.depth), _chw(cur.motion), _chw(cur.depth), 0.05)
        mask = valid[0, 0]
        if mask.sum() == 0:
            continue
        diff = (warped[0].permute(1, 2, 0) - outputs[t].float()).abs().mean(-1)
        errs.append(float(diff[mask].mean()))
    return errs


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def _ratio(a: float, b: float) -> float:
    return a / max(b, 1e-6)


@dataclass
class Targets:
    """Every style's targets for one sequence's frames, and what the metrics derive from them,
    computed once and shared by every run scored on those frames (`of`)."""
    frames: list
    oracles: dict[str, list[torch.Tensor]]  # every style's exact oracle, [H, W, 3] per frame
    near: dict[str, list[torch.Tensor]]  # every style's oracle low-passed at ADHERENCE_SIGMA
    averaged: dict[str, list[torch.Tensor]]  # the scored styles' averaged oracles (the oracle itself without hidden detail)
    oracle_warp: dict[str, float]  # the scored styles' own mean warp error, full resolution
    oracle_warp_lowpass: dict[str, float]  # the same with the oracle low-passed at `sigma`
    sigma: float  # px: the scaled low-pass of `psnr_scaled` and `warp_ratio_lowpass`

    @classmethod
    def of(cls, frames, styles: Iterable[str] | None = None, draws: int = 8, seed: int = 0) -> "Targets":
        """Targets for `frames` (RenderedFrames), scored as `styles` (default: every style); the
        averaged oracles take `draws` draws at `seed` (oracles.averaged_oracle)."""
        styles = list(STYLES) if styles is None else list(styles)
        oracles = {name: [fn(f).float() for f in frames] for name, fn in STYLES.items()}
        near = {name: [lowpass(t, ADHERENCE_SIGMA) for t in ts] for name, ts in oracles.items()}
        averaged = {s: [averaged_oracle(f, s, draws, seed).float() for f in frames] if s in HIDDEN_DETAIL else oracles[s]
                    for s in styles}
        sigma = scaled_sigma(frames[0].color.shape[0])
        return cls(frames, oracles, near, averaged,
                   {s: _mean(warp_errors(oracles[s], frames)) for s in styles},
                   {s: _mean(warp_errors([lowpass(t, sigma) for t in oracles[s]], frames)) for s in styles}, sigma)


def _fidelity(preds: list[torch.Tensor], targets: list[torch.Tensor], sigma: float | None,
              with_ssim: bool = True) -> tuple[float, float]:
    """Means over frames of PSNR and SSIM (nan unless `with_ssim`) of `preds` against `targets`,
    both low-passed at `sigma` px first unless it is None."""
    ps, ss = [], []
    for p, t in zip(preds, targets):
        if sigma is not None:
            p, t = lowpass(p, sigma), lowpass(t, sigma)
        ps.append(psnr(p, t))
        if with_ssim:
            ss.append(ssim(p, t))
    return statistics.fmean(ps), statistics.fmean(ss) if with_ssim else math.nan


def _fixed_fidelity(preds: list[torch.Tensor], targets: Targets, style: str) -> tuple[float, float, float]:
    """`psnr`, `ssim` and `psnr_scaled` of `preds` asked to be `style`: the metric the project has
    always reported, and the same with the low-pass scaled with the frame. The ceiling is this
    function applied to the averaged oracle, so it is the same metric by construction."""
    smooth = style in SURFACE_ATTACHED
    p, s = _fidelity(preds, targets.oracles[style], LOWPASS_SIGMA if smooth else None)
    scaled, _ = _fidelity(preds, targets.oracles[style], targets.sigma if smooth else None, with_ssim=False)
    return p, s, scaled


def adherence_margin(mse: dict[str, float], style: str) -> float:
    """(d_other - d_asked) / max(d_other, d_asked), with d the RMS distances (square roots of
    `mse`: each style's mean squared distance) to the asked `style` and to the nearest other
    style. Positive when the asked style is nearest, 1 when the output is its oracle; negative
    when another is nearer, -1 at worst."""
    if style not in mse or len(mse) < 2:
        raise ValueError(f"a margin needs the asked style {style!r} and at least one other among {sorted(mse)}")
    d_asked = math.sqrt(mse[style])
    d_other = math.sqrt(min(v for k, v in mse.items() if k != style))
    top = max(d_asked, d_other)
    return 0.0 if top == 0 else (d_other - d_asked) / top


@dataclass
class SequenceScore:
    psnr: float
    ssim: float
    warp_error: float
    oracle_warp_error: float
    adherence: float
    fidelity_psnr: float
    fidelity_ssim: float
    psnr_scaled: float
    adherence_margin: float
    warp_error_lowpass: float
    oracle_warp_error_lowpass: float
    token_grid: float

    @property
    def warp_ratio(self) -> float:
        return _ratio(self.warp_error, self.oracle_warp_error)

    @property
    def warp_ratio_lowpass(self) -> float:
        return _ratio(self.warp_error_lowpass, self.oracle_warp_error_lowpass)


def grid_levels(outputs: list[torch.Tensor], targets: list[torch.Tensor], patch: int) -> float:
    """`token_grid`: the RMS in 8-bit levels of the frames' mean token-grid pattern of the error
    (outputs and targets [H, W, 3])."""
    pattern = torch.stack([token_grid((o.float() - t.float()).permute(2, 0, 1), patch)
                           for o, t in zip(outputs, targets)]).mean(0)
    return 255.0 * float(pattern.square().mean().sqrt())


def score_sequence(outputs: list[torch.Tensor], targets: Targets, style: str,
                   patch: int = ModelConfig.patch) -> SequenceScore:
    """Score outputs [H, W, 3] in [0, 1] of `targets.frames` asked to be `style`; `patch` is the
    model's token stride (`token_grid`'s period)."""
    p, s, scaled = _fixed_fidelity(outputs, targets, style)
    fid_p, fid_s = _fidelity(outputs, targets.averaged[style], None)
    hits, margins = 0, []
    for k, out in enumerate(outputs):
        lo = lowpass(out, ADHERENCE_SIGMA)
        dists = {name: F.mse_loss(lo, near[k]).item() for name, near in targets.near.items()}
        hits += min(dists, key=dists.get) == style
        margins.append(adherence_margin(dists, style))
    frames = targets.frames
    we = warp_errors(outputs, frames)
    wl = warp_errors([lowpass(o, targets.sigma) for o in outputs], frames)
    return SequenceScore(p, s, _mean(we), targets.oracle_warp[style], hits / len(outputs), fid_p, fid_s, scaled,
                         statistics.fmean(margins), _mean(wl), targets.oracle_warp_lowpass[style],
                         grid_levels(outputs, targets.averaged[style], patch))


def ceiling(targets: Targets, style: str) -> dict[str, float]:
    """The score of the best possible prediction (the averaged oracle) on `psnr`, `ssim` and
    `psnr_scaled`: what a model given these inputs can reach on those metrics."""
    p, s, scaled = _fixed_fidelity(targets.averaged[style], targets, style)
    return {"ceiling_psnr": p, "ceiling_ssim": s, "ceiling_psnr_scaled": scaled}


def _row(ours: SequenceScore, base: SequenceScore, ceil: dict[str, float], style: str) -> dict[str, float]:
    """One sequence's entries of a style, the keys reports have always had first."""
    row = {"psnr": ours.psnr, "ssim": ours.ssim, "warp_ratio": ours.warp_ratio, "adherence": ours.adherence,
           "baseline_psnr": base.psnr, "baseline_ssim": base.ssim, "baseline_warp_ratio": base.warp_ratio,
           "baseline_adherence": base.adherence}
    for prefix, sc in (("", ours), ("baseline_", base)):
        row.update({f"{prefix}fidelity_psnr": sc.fidelity_psnr, f"{prefix}fidelity_ssim": sc.fidelity_ssim,
                    f"{prefix}psnr_scaled": sc.psnr_scaled, f"{prefix}adherence_margin": sc.adherence_margin,
                    f"{prefix}warp_ratio_lowpass": sc.warp_ratio_lowpass, f"{prefix}token_grid": sc.token_grid})
    row.update(ceil)
    if style in FULLRES_STYLES:
        row["fullres_baseline_factor"] = _ratio(base.warp_error, ours.warp_error)
    return row


def summarize(styles: dict[str, dict[str, float]]) -> dict[str, float]:
    """The overall row: each key's mean over the styles that have it (not the PSNR ceilings:
    NOT_AVERAGED), and the median over styles of the warp ratios (`<key>_median`, MEDIAN_KEYS)."""
    keys = list(dict.fromkeys(k for m in styles.values() for k in m))
    overall = {k: statistics.fmean(m[k] for m in styles.values() if k in m) for k in keys if k not in NOT_AVERAGED}
    for k in MEDIAN_KEYS:
        if k in keys:
            overall[f"{k}_median"] = statistics.median(m[k] for m in styles.values() if k in m)
    return overall


@dataclass
class EvalConfig:
    """What `evaluate` scores. `sizes` are the frame sizes (default: the training size and twice
    it); `size` alone, as before there were several, scores that one size. The config a source is
    handed (`at`) has one size, in `size`, which is what a source renders at."""
    seeds: list[int] = field(default_factory=lambda: list(split("heldout").seeds)[:4])
    prompts: dict[str, list[str]] = field(default_factory=lambda: dict(split("heldout").phrasings))
    size: tuple[int, int] | None = None
    frames: int = 16
    steps: int = 2
    strength: float = 0.5
    camera: str = "handheld"
    fps: float = 30.0
    sizes: list[tuple[int, int]] | None = None
    draws: int = 8  # draws of the averaged oracle (oracles.averaged_oracle)
    draw_seed: int = 0

    def __post_init__(self):
        if self.sizes is None:
            self.sizes = [self.size] if self.size is not None else list(DEFAULT_SIZES)
        try:
            self.sizes = [(int(w), int(h)) for w, h in self.sizes]
        except (TypeError, ValueError):
            raise ValueError(f"sizes must be (width, height) pairs, not {self.sizes!r}") from None
        if not self.sizes or any(w < 1 or h < 1 for w, h in self.sizes):
            raise ValueError(f"sizes must be one or more positive (width, height) pairs, not {self.sizes!r}")
        if len(set(self.sizes)) != len(self.sizes):
            raise ValueError(f"a size is given twice in {self.sizes!r}")
        if self.size is not None and tuple(self.size) != self.sizes[0]:
            raise ValueError(f"give size or sizes, not both ({self.size!r} and {self.sizes!r})")
        self.size = self.sizes[0]
        if isinstance(self.draws, bool) or not isinstance(self.draws, int) or self.draws < 1:
            raise ValueError(f"draws must be a positive integer, not {self.draws!r}")

    def at(self, size: tuple[int, int]) -> "EvalConfig":
        """This config at one `size`."""
        return replace(self, size=tuple(size), sizes=[tuple(size)])


@dataclass
class Sequence:
    """One camera path's frames (`RenderedFrame`s on the evaluation's device, cut on the first) as
    a source hands them over; `seed` seeds the session's noise."""
    name: str
    seed: int
    frames: list


SequenceSource = Callable[[EvalConfig, torch.device], Iterable[Sequence]]


def reference_sequences(cfg: EvalConfig, device) -> Iterable[Sequence]:
    """The reference engine's scenes at `cfg.seeds`, along `cfg.camera`'s path, at `cfg.size`."""
    for seed in cfg.seeds:
        scene = Scene.generate(seed)
        r = Renderer(scene, CameraPath(cfg.camera, seed=seed, extent=scene.extent), *cfg.size, fps=cfg.fps, device=device)
        yield Sequence(f"seed {seed}", seed, [r.render(i) for i in range(cfg.frames)])


def run_sequence(stylizer: Stylizer, frames, prompt: str, cfg: EvalConfig, seed: int, per_frame: bool) -> list[torch.Tensor]:
    """`frames` through the service's per-frame path at `cfg.size`, as a session does (temporal
    state, warped history) or, with `per_frame`, as the baseline (every frame a reset from noise).
    Returns the outputs, [H, W, 3] float in [0, 1]."""
    w, h = cfg.size
    layout = reference_layout(w, h, surface=True)  # the reference engine's slot, surface channel included
    session = stylizer.open_session(w, h, layout, seed=seed)
    try:
        if stylizer.prompts is not None:
            stylizer.set_prompt(session, prompt)
        outs, slot = [], None
        for f in frames:
            slot = to_slot(f, layout, slot)
            params = (FrameParams(steps=cfg.steps, strength=1.0, reset=True) if per_frame
                      else FrameParams(steps=cfg.steps, strength=cfg.strength, reset=f.cut))
            outs.append(stylizer.step(session, slot, params).permute(1, 2, 0).float())
        return outs
    finally:
        stylizer.close_session(session)


def evaluate(stylizer: Stylizer, cfg: EvalConfig, progress: bool = True, source: SequenceSource = reference_sequences,
             count: int | None = None, set_name: str = "heldout",
             keep: Callable[[Sequence, str, list[torch.Tensor]], None] | None = None) -> dict:
    """Every style of `cfg.prompts` on every sequence of `source(cfg.at(size), device)` (`count`
    of them, for the progress bar; default len(cfg.seeds)), at each of `cfg.sizes`. The report's
    `sizes` holds one entry per size ("WxH": size, sequences, styles, overall); its top-level
    `size`, `sequences`, `styles` and `overall` are the largest size's. `keep(sequence, style,
    outputs)` is handed each temporal run's outputs ([H, W, 3] in [0, 1])."""
    device = stylizer.device
    unknown = sorted(set(cfg.prompts) - set(STYLES))
    if unknown:
        raise ValueError(f"the prompts name unknown styles: {', '.join(unknown)}; known: {', '.join(STYLES)}")
    if cfg.frames < 1:
        raise ValueError(f"frames must be at least 1, got {cfg.frames}")
    count = len(cfg.seeds) if count is None else count
    patch = stylizer.model.config.patch
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=count * len(cfg.prompts) * len(cfg.sizes), unit="sequence", desc=f"eval {set_name}",
                   dynamic_ncols=True)
    sizes = {}
    try:
        for size in cfg.sizes:
            one = cfg.at(size)
            per_style: dict[str, dict[str, list[float]]] = {}
            names = []
            for i, seq in enumerate(source(one, device)):
                frames, seed = seq.frames, seq.seed
                names.append(seq.name)
                targets = Targets.of(frames, cfg.prompts, cfg.draws, cfg.draw_seed)
                for style, phrasings in cfg.prompts.items():
                    prompt = phrasings[i % len(phrasings)]
                    outputs = run_sequence(stylizer, frames, prompt, one, seed, False)
                    if keep is not None:
                        keep(seq, style, outputs)
                    ours = score_sequence(outputs, targets, style, patch)
                    base = score_sequence(run_sequence(stylizer, frames, prompt, one, seed, True), targets, style, patch)
                    acc = per_style.setdefault(style, {})
                    for name, value in _row(ours, base, ceiling(targets, style), style).items():
                        acc.setdefault(name, []).append(value)
                    if bar is not None:
                        bar.update(1)
            styles = {s: {k: statistics.fmean(v) for k, v in m.items()} for s, m in per_style.items()}
            sizes[f"{size[0]}x{size[1]}"] = {"size": list(size), "lowpass_sigma": LOWPASS_SIGMA,
                                             "scaled_sigma": scaled_sigma(size[1]), "sequences": names,
                                             "styles": styles, "overall": summarize(styles)}
    finally:
        if bar is not None:
            bar.close()
    main = max(sizes.values(), key=lambda r: r["size"][0] * r["size"][1])
    return {"set": set_name, "size": main["size"], "frames": cfg.frames, "steps": cfg.steps,
            "seeds": cfg.seeds if source is reference_sequences else [], "sequences": main["sequences"],
            "styles": main["styles"], "overall": main["overall"], "draws": cfg.draws,
            "prompts": {k: list(v) for k, v in cfg.prompts.items()}, "sizes": sizes}


# format_report's columns: (header, key, decimals). The JSON report has every key.
COLUMNS = (("psnr", "psnr", 2), ("ceil", "ceiling_psnr", 2), ("psnr_sc", "psnr_scaled", 2),
           ("ceil_sc", "ceiling_psnr_scaled", 2), ("fid_psnr", "fidelity_psnr", 2), ("ssim", "ssim", 3),
           ("ceil_ss", "ceiling_ssim", 3), ("fid_ssim", "fidelity_ssim", 3), ("adh", "adherence", 3),
           ("margin", "adherence_margin", 3), ("warp", "warp_ratio", 2), ("warp_lp", "warp_ratio_lowpass", 2),
           ("fr_x", "fullres_baseline_factor", 2), ("grid", "token_grid", 2), ("b_psnr", "baseline_psnr", 2),
           ("b_fid", "baseline_fidelity_psnr", 2), ("b_adh", "baseline_adherence", 3),
           ("b_margin", "baseline_adherence_margin", 3), ("b_warp", "baseline_warp_ratio", 2),
           ("b_warp_lp", "baseline_warp_ratio_lowpass", 2), ("b_grid", "baseline_token_grid", 2))
LEGEND = """\
ceil*: the best possible prediction's (the averaged oracle's) score on that metric; 'exact': the 100 dB cap
_sc: low-pass scaled with the frame; fid_: against the averaged oracle, no low-pass
margin: how much nearer the asked style's oracle is than the next one (> 0: the nearest); warp_lp: low-passed
fr_x: the baseline's full-resolution warp error over ours; b_: the per-frame baseline
grid: the error's pattern at the token stride, RMS in 8-bit levels (0: no patch seams)
OVERALL: mean over styles; MEDIAN: median over styles"""


def _cell(m: dict, key: str, decimals: int, width: int) -> str:
    if key not in m:
        return f"{'-':>{width}}"
    if key.startswith("ceiling_psnr") and m[key] >= 100.0:
        return f"{'exact':>{width}}"
    return f"{m[key]:>{width}.{decimals}f}"


def format_report(report: dict) -> str:
    """One table per frame size (a report from before there were several is one size)."""
    tables = report.get("sizes") or {"x".join(map(str, report["size"])): report}
    width = max(9, *(len(h) + 1 for h, _, _ in COLUMNS))
    lines = []
    for name, table in tables.items():
        sigma = table.get("scaled_sigma")
        lines.append(f"{report.get('set', 'eval')} {name}, {report.get('frames')} frames, {report.get('steps')} steps"
                     + (f"; low-pass {LOWPASS_SIGMA:g} px (psnr, ssim), {sigma:.2f} px (psnr_sc, warp_lp)"
                        if sigma is not None else ""))
        lines.append(f"{'style':<11}" + "".join(f"{h:>{width}}" for h, _, _ in COLUMNS))
        overall = table["overall"]
        median = {k[:-len("_median")]: v for k, v in overall.items() if k.endswith("_median")}
        for label, m in list(table["styles"].items()) + [("OVERALL", overall), ("MEDIAN", median)]:
            if label == "MEDIAN" and not m:
                continue
            lines.append(f"{label:<11}" + "".join(_cell(m, k, d, width) for _, k, d in COLUMNS))
        lines.append("")
    lines.append(LEGEND)
    return "\n".join(lines)


MARKDOWN_COLUMNS = (("PSNR", "psnr", 2), ("its ceiling", "ceiling_psnr", 1), ("fidelity PSNR", "fidelity_psnr", 2),
                    ("SSIM", "ssim", 3), ("adherence", "adherence", None), ("margin", "adherence_margin", 3),
                    ("warp ratio", "warp_ratio", 2), ("token grid", "token_grid", 2), ("baseline PSNR", "baseline_psnr", 2),
                    ("baseline warp ratio", "baseline_warp_ratio", 2))


def markdown_tables(report: dict) -> str:
    """The report as the model card's tables (one per frame size): per style and overall, ours
    beside the per-frame baseline, the overall warp ratios with their medians."""
    tables = report.get("sizes") or {"x".join(map(str, report["size"])): report}

    def cell(m: dict, key: str, decimals: int | None, bold: bool = False) -> str:
        if key not in m:
            return "-"
        v = m[key]
        if key == "ceiling_psnr":
            text = "exact" if v >= 100.0 else f"{v:.{decimals}f}"
        elif decimals is None:
            text = f"{100 * v:.1f}%" if bold else f"{100 * v:.0f}%"
        elif key == "adherence_margin":
            text = f"{v:+.{decimals}f}"
        else:
            text = f"{v:.{decimals}f}"
        if bold and key in ("warp_ratio", "baseline_warp_ratio") and f"{key}_median" in m:
            return f"**{text}** (median {m[key + '_median']:.2f})"
        return f"**{text}**" if bold and text != "-" else text

    out = []
    for name, table in tables.items():
        out.append(f"**{name}** ({report.get('set', 'eval')}, seeds "
                   f"{', '.join(f'{s:,}' for s in report.get('seeds', []))}, {report.get('frames')} frames, "
                   f"{report.get('steps')} steps):")
        out.append("")
        out.append("| style | " + " | ".join(h for h, _, _ in MARKDOWN_COLUMNS) + " |")
        out.append("| --- |" + " --- |" * len(MARKDOWN_COLUMNS))
        for style, m in table["styles"].items():
            out.append(f"| {style} | " + " | ".join(cell(m, k, d) for _, k, d in MARKDOWN_COLUMNS) + " |")
        overall = {k: v for k, v in table["overall"].items() if k != "ceiling_psnr"}
        out.append("| **overall** | " + " | ".join(cell(overall, k, d, bold=True) for _, k, d in MARKDOWN_COLUMNS)
                   + " |")
        out.append("")
    return "\n".join(out)


def load_prompts_file(path: str | Path) -> dict[str, list[str]]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read prompts file {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) and v and all(isinstance(p, str) for p in v)
                                             for v in data.values()):
        raise ValueError(f"{path} must map style names to non-empty lists of phrasings")
    return data
