"""`streamstyle eval`: fidelity, temporal stability and prompt adherence, through the per-frame
path the service runs (frames written into the engine's slot format, `Stylizer.step`).

Per scene seed and style (a phrasing from the held-out split, or a prompts file), N frames along a
handheld camera path are stylized twice: as the service does (temporal state, warped history) and
by a per-frame baseline (same steps, every frame a reset from noise, nothing carried). Metrics:
- fidelity: PSNR and SSIM against the oracle; for styles whose detail is attached to surfaces the
  model cannot see, both images are low-passed first, so that free detail is not scored;
- stability: the mean warp error between consecutive outputs on pixels visible in both frames
  (exact motion vectors, depth-test occlusion), as a ratio to the oracle's own warp error;
- adherence: the share of frames whose output is nearer (low-passed, L2) to the oracle of the
  asked style than to any other style's oracle.

The frames come from a source of sequences (`Sequence`: a name, a seed, rendered frames). The
held-out set's source is the reference engine at held-out seeds (`reference_sequences`); the real
set's is a real engine (tools/real_eval.py: Panda3D on real scenes, the oracles applied to its
G-buffers). Every source goes through the same `evaluate`: one computation, other data.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ...engine_plugins.reference_engine import CameraPath, Renderer, Scene
from ...engine_plugins.reference_engine.gbuffers import to_slot
from ...engine_plugins.reference_engine.oracles import STYLES, SURFACE_ATTACHED
from ...engine_plugins.reference_engine.prompts import split
from ...kernels.warp import warp_previous
from ..frame import FrameParams
from ..layout import reference_layout
from ..stylizer import Stylizer


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


@dataclass
class SequenceScore:
    psnr: float
    ssim: float
    warp_error: float
    oracle_warp_error: float
    adherence: float

    @property
    def warp_ratio(self) -> float:
        return self.warp_error / max(self.oracle_warp_error, 1e-6)


def score_sequence(outputs: list[torch.Tensor], frames, style: str, oracles: dict[str, list[torch.Tensor]]) -> SequenceScore:
    """Score outputs [H, W, 3] in [0, 1] of `frames` asked to be `style`; `oracles` holds every
    style's targets for the same frames."""
    targets = oracles[style]
    smooth = style in SURFACE_ATTACHED
    ps, ss, hits = [], [], 0
    for out, tgt, k in zip(outputs, targets, range(len(outputs))):
        o, t = (lowpass(out), lowpass(tgt)) if smooth else (out, tgt)
        ps.append(psnr(o, t))
        ss.append(ssim(o, t))
        lo = lowpass(out, 3.0)
        dists = {name: F.mse_loss(lo, lowpass(oracles[name][k], 3.0)).item() for name in oracles}
        hits += min(dists, key=dists.get) == style
    mean = statistics.fmean
    we = warp_errors(outputs, frames)
    owe = warp_errors(targets, frames)
    return SequenceScore(mean(ps), mean(ss), mean(we) if we else 0.0, mean(owe) if owe else 0.0, hits / len(outputs))


@dataclass
class EvalConfig:
    seeds: list[int] = field(default_factory=lambda: list(split("heldout").seeds)[:4])
    prompts: dict[str, list[str]] = field(default_factory=lambda: dict(split("heldout").phrasings))
    size: tuple[int, int] = (512, 512)
    frames: int = 16
    steps: int = 2
    strength: float = 0.5
    camera: str = "handheld"
    fps: float = 30.0


@dataclass
class Sequence:
    """One camera path's frames (`RenderedFrame`s on the evaluation's device, cut on the first) as
    a source hands them over; `seed` seeds the session's noise."""
    name: str
    seed: int
    frames: list


SequenceSource = Callable[[EvalConfig, torch.device], Iterable[Sequence]]


def reference_sequences(cfg: EvalConfig, device) -> Iterable[Sequence]:
    """The reference engine's scenes at `cfg.seeds`, along `cfg.camera`'s path."""
    for seed in cfg.seeds:
        scene = Scene.generate(seed)
        r = Renderer(scene, CameraPath(cfg.camera, seed=seed, extent=scene.extent), *cfg.size, fps=cfg.fps, device=device)
        yield Sequence(f"seed {seed}", seed, [r.render(i) for i in range(cfg.frames)])


def _run(stylizer: Stylizer, frames, prompt: str, cfg: EvalConfig, seed: int, per_frame: bool) -> list[torch.Tensor]:
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
    """Every style of `cfg.prompts` on every sequence of `source(cfg, device)` (`count` of them, for
    the progress bar; default len(cfg.seeds)). The report's `sequences` names what was scored.
    `keep(sequence, style, outputs)` is handed each temporal run's outputs ([H, W, 3] in [0, 1])."""
    device = stylizer.device
    unknown = sorted(set(cfg.prompts) - set(STYLES))
    if unknown:
        raise ValueError(f"the prompts name unknown styles: {', '.join(unknown)}; known: {', '.join(STYLES)}")
    if cfg.frames < 1:
        raise ValueError(f"frames must be at least 1, got {cfg.frames}")
    count = len(cfg.seeds) if count is None else count
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=count * len(cfg.prompts), unit="sequence", desc=f"eval {set_name}", dynamic_ncols=True)
    per_style: dict[str, dict[str, list[float]]] = {}
    names = []
    for i, seq in enumerate(source(cfg, device)):
        frames, seed = seq.frames, seq.seed
        names.append(seq.name)
        oracles = {name: [fn(f).float() for f in frames] for name, fn in STYLES.items()}
        for style, phrasings in cfg.prompts.items():
            prompt = phrasings[i % len(phrasings)]
            outputs = _run(stylizer, frames, prompt, cfg, seed, False)
            if keep is not None:
                keep(seq, style, outputs)
            temporal = score_sequence(outputs, frames, style, oracles)
            baseline = score_sequence(_run(stylizer, frames, prompt, cfg, seed, True), frames, style, oracles)
            acc = per_style.setdefault(style, {})
            for name, value in (("psnr", temporal.psnr), ("ssim", temporal.ssim), ("warp_ratio", temporal.warp_ratio),
                                ("adherence", temporal.adherence), ("baseline_psnr", baseline.psnr),
                                ("baseline_ssim", baseline.ssim), ("baseline_warp_ratio", baseline.warp_ratio),
                                ("baseline_adherence", baseline.adherence)):
                acc.setdefault(name, []).append(value)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    styles = {s: {k: statistics.fmean(v) for k, v in m.items()} for s, m in per_style.items()}
    keys = next(iter(styles.values())).keys() if styles else []
    overall = {k: statistics.fmean(s[k] for s in styles.values()) for k in keys}
    return {"set": set_name, "size": list(cfg.size), "frames": cfg.frames, "steps": cfg.steps,
            "seeds": cfg.seeds if source is reference_sequences else [], "sequences": names,
            "styles": styles, "overall": overall}


def format_report(report: dict) -> str:
    cols = ("psnr", "ssim", "warp_ratio", "adherence", "baseline_psnr", "baseline_warp_ratio")
    head = f"{'style':<11}" + "".join(f"{c:>20}" for c in cols)
    lines = [head]
    for name, m in list(report["styles"].items()) + [("OVERALL", report["overall"])]:
        lines.append(f"{name:<11}" + "".join(f"{m[c]:>20.3f}" for c in cols))
    return "\n".join(lines)


def load_prompts_file(path: str | Path) -> dict[str, list[str]]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read prompts file {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) and v and all(isinstance(p, str) for p in v)
                                             for v in data.values()):
        raise ValueError(f"{path} must map style names to non-empty lists of phrasings")
    return data
