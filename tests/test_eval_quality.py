"""The evaluation's read-against-what-is-reachable metrics (issue 13): the averaged oracles, the
fidelity and ceiling scores, the scaled low-pass, the adherence margin, median and mean warp ratios,
several sizes in one report, and `streamstyle eval-media`. Tiny frames and the tiny model on the CPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from streamstyle.engine_plugins.reference_engine.oracles import (HIDDEN_DETAIL, STYLES, SURFACE_ATTACHED,
                                                                 averaged_oracle, detail_offsets)
from streamstyle.model.training.evaluate import (FULLRES_STYLES, LOWPASS_SIGMA, EvalConfig, Targets,
                                                 adherence_margin, ceiling, evaluate, format_report, lowpass, psnr,
                                                 reference_sequences, scaled_sigma, score_sequence, ssim, summarize)

from .conftest import perturb

HELD_SEED = 1000000


@pytest.fixture(scope="module")
def frames():
    (seq,) = reference_sequences(EvalConfig(seeds=[HELD_SEED], size=(64, 64), frames=3), "cpu")
    return seq.frames


@pytest.fixture(scope="module")
def targets(frames):
    return Targets.of(frames, draws=8, seed=0)


def highpass_energy(img: torch.Tensor, f) -> float:
    """Mean high-frequency energy of [H, W, 3] `img` on frame `f`'s surfaces, away from the ink
    lines (edges are exact in every draw; the hatching and grain between them are not)."""
    from streamstyle.engine_plugins.reference_engine.oracles import edges

    away = torch.nn.functional.max_pool2d(edges(f)[None, None], 5, 1, 2)[0, 0] == 0
    mask = away & (f.ids[..., 0] != 0)
    return float(((img - lowpass(img, 1.5)) ** 2).mean(-1)[mask].mean())


# --- averaged oracles ------------------------------------------------------------------------------

def test_styles_without_hidden_detail_average_to_the_oracle_itself(frames):
    assert set(SURFACE_ATTACHED) == set(HIDDEN_DETAIL) == {"pencil", "watercolor", "oilpaint", "blueprint"}
    for style in set(STYLES) - set(HIDDEN_DETAIL):  # noir, thermal and neon among them: the model sees their inputs
        assert torch.equal(averaged_oracle(frames[1], style, k=3, seed=5), STYLES[style](frames[1])), style


@pytest.mark.parametrize("style", sorted(HIDDEN_DETAIL))
def test_a_zero_offset_is_the_oracle_and_another_offset_another_draw(frames, style):
    f = frames[1]
    exact = STYLES[style](f)
    assert torch.equal(STYLES[style](f, offset=(0.0, 0.0, 0.0)), exact)
    assert torch.equal(STYLES[style](f, offset=None), exact)
    moved = STYLES[style](f, offset=(0.37, 1.9, 4.2))
    assert (moved - exact).abs().max() > 0.05  # the detail moved
    # ...and only the detail: the low-passed picture (tone, washes, edges) stays close
    assert psnr(lowpass(moved, 4.0), lowpass(exact, 4.0)) > 22


def test_pencil_averaged_is_smoother_keeps_its_tone_and_is_deterministic(frames):
    f = frames[1]
    exact = STYLES["pencil"](f)
    avg = averaged_oracle(f, "pencil", k=8, seed=3)
    assert highpass_energy(avg, f) < 0.6 * highpass_energy(exact, f)
    assert highpass_energy(averaged_oracle(f, "pencil", k=16, seed=3), f) < highpass_energy(
        averaged_oracle(f, "pencil", k=2, seed=3), f)
    assert abs(float(avg.mean() - exact.mean())) < 0.03  # the mean tone survives the averaging
    assert torch.equal(averaged_oracle(f, "pencil", k=8, seed=3), avg)
    assert not torch.equal(averaged_oracle(f, "pencil", k=8, seed=4), avg)
    assert torch.equal(detail_offsets(4, 9), detail_offsets(4, 9)) and detail_offsets(4, 9).shape == (4, 3)


def test_the_blueprint_grid_moves_along_surfaces_not_across_them(frames):
    """The ground's height (0) lies on a grid line, so the exact oracle tints the whole ground; an
    offset across the ground (y only) must leave that alone, and still move the objects' grid."""
    f = frames[1]
    exact = STYLES["blueprint"](f)
    moved = STYLES["blueprint"](f, offset=(0.0, 0.31, 0.0))
    ids = f.ids[..., 0]
    same = (moved == exact).all(-1)
    assert same[ids == 1].float().mean() > 0.9
    assert not same[ids >= 2].all()


@pytest.mark.parametrize("call, words", [
    (lambda f: averaged_oracle(f, "sepia"), "unknown style 'sepia'"),
    (lambda f: averaged_oracle(f, "pencil", k=0), "positive integer"),
    (lambda f: averaged_oracle(f, "cel", k=2.5), "positive integer"),
    (lambda f: STYLES["pencil"](f, offset=(1.0, 2.0)), "3 finite numbers"),
    (lambda f: STYLES["watercolor"](f, offset=(1.0, float("nan"), 0.0)), "3 finite numbers"),
    (lambda f: STYLES["oilpaint"](f, offset="abc"), "3 numbers"),
])
def test_bad_averaging_input_is_refused(frames, call, words):
    with pytest.raises(ValueError, match=words):
        call(frames[0])


# --- metrics on constructed cases ------------------------------------------------------------------

def test_todays_metrics_are_computed_as_they_always_were(frames, targets, gen):
    """psnr/ssim: low-passed at 2 px for the surface-attached styles at every size, raw otherwise;
    adherence against the 3 px low-passed oracles; recomputed here by hand."""
    outs = [torch.rand(64, 64, 3, generator=gen) * 0.5 + 0.5 * t for t in targets.oracles["pencil"]]
    for style in ("pencil", "cel"):
        score = score_sequence(outs, targets, style)
        lp = (lambda x: lowpass(x)) if style in SURFACE_ATTACHED else (lambda x: x)
        want_p = sum(psnr(lp(o), lp(t)) for o, t in zip(outs, targets.oracles[style])) / 3
        want_s = sum(ssim(lp(o), lp(t)) for o, t in zip(outs, targets.oracles[style])) / 3
        assert score.psnr == pytest.approx(want_p, abs=1e-9) and score.ssim == pytest.approx(want_s, abs=1e-9)
    assert LOWPASS_SIGMA == 2.0 and scaled_sigma(512) == 2.0 and scaled_sigma(1024) == 4.0 and scaled_sigma(720) == 2.8125


@pytest.mark.parametrize("style", ["cel", "pencil", "watercolor"])
def test_the_oracle_scores_itself_perfectly_and_the_averaged_oracle_reaches_the_ceiling(targets, style):
    exact = score_sequence(targets.oracles[style], targets, style)
    assert exact.psnr == 100.0 and exact.psnr_scaled == 100.0 and exact.adherence == 1.0
    assert exact.adherence_margin == 1.0
    assert exact.warp_ratio == pytest.approx(1.0) and exact.warp_ratio_lowpass == pytest.approx(1.0)
    best = score_sequence(targets.averaged[style], targets, style)
    assert best.fidelity_psnr == 100.0 and best.fidelity_ssim > 0.999 and best.adherence_margin > 0
    ceil = ceiling(targets, style)
    assert ceil["ceiling_psnr"] == best.psnr and ceil["ceiling_ssim"] == best.ssim
    assert ceil["ceiling_psnr_scaled"] == best.psnr_scaled
    if style in HIDDEN_DETAIL:  # detail the model cannot see: the exact target is out of reach
        assert ceil["ceiling_psnr"] < 60 and exact.fidelity_psnr < 60
    else:
        assert ceil["ceiling_psnr"] == 100.0 and exact.fidelity_psnr == 100.0


def test_the_token_grid_is_the_amplitude_of_a_pattern_repeated_over_every_token(targets, gen):
    """A pattern added to every 16-pixel cell of every frame scores its own RMS in 8-bit levels;
    the averaged oracle scores 0; noise of the same size that is not locked to the grid scores far
    less; the period is the model's token stride, given as `patch`."""
    style = "cel"
    best = targets.averaged[style]
    h, w = best[0].shape[:2]
    pattern = torch.zeros(16, 16, 3)
    pattern[0, :] = pattern[:, 0] = 0.02  # a seam along each token's top and left edge
    pattern -= pattern.mean((0, 1))
    tiled = pattern.repeat(h // 16, w // 16, 1)
    assert score_sequence(best, targets, style).token_grid == 0.0
    seamed = score_sequence([t + tiled for t in best], targets, style)
    assert seamed.token_grid == pytest.approx(255 * float(pattern.square().mean().sqrt()), rel=1e-4)
    noisy = [t + torch.randn(t.shape, generator=gen) * float(pattern.square().mean().sqrt()) for t in best]
    assert score_sequence(noisy, targets, style).token_grid < 0.3 * seamed.token_grid
    small = pattern[::2, ::2] - pattern[::2, ::2].mean((0, 1))  # seams every 8 px, for a model of 8 px tokens
    eight = score_sequence([t + small.repeat(h // 8, w // 8, 1) for t in best], targets, style, patch=8)
    assert eight.token_grid == pytest.approx(255 * float(small.square().mean().sqrt()), rel=1e-4)


def test_a_wrong_style_scores_a_negative_margin(targets):
    wrong = score_sequence(targets.oracles["noir"], targets, "cel")
    assert wrong.adherence == 0.0 and -1.0 <= wrong.adherence_margin < 0
    assert score_sequence(targets.oracles["noir"], targets, "noir").adherence_margin == 1.0


def test_the_margin_is_the_share_by_which_the_asked_oracle_is_nearer():
    mse = {"a": 1.0, "b": 4.0, "c": 9.0}  # RMS distances 1, 2, 3
    assert adherence_margin(mse, "a") == pytest.approx((2 - 1) / 2)
    assert adherence_margin(mse, "c") == pytest.approx((1 - 3) / 3)
    assert adherence_margin({"a": 0.0, "b": 0.0}, "a") == 0.0
    with pytest.raises(ValueError, match="at least one other"):
        adherence_margin({"a": 1.0}, "a")


def test_the_overall_row_gives_mean_and_median_over_styles():
    styles = {"cel": {"warp_ratio": 1.0, "baseline_warp_ratio": 2.0, "psnr": 20.0, "ceiling_psnr": 100.0,
                      "ceiling_ssim": 1.0},
              "pencil": {"warp_ratio": 2.0, "baseline_warp_ratio": 4.0, "psnr": 14.0, "ceiling_psnr": 20.0,
                         "ceiling_ssim": 0.8, "fullres_baseline_factor": 3.0},
              "thermal": {"warp_ratio": 9.0, "baseline_warp_ratio": 30.0, "psnr": 17.0, "ceiling_psnr": 100.0,
                          "ceiling_ssim": 1.0}}
    overall = summarize(styles)
    assert overall["warp_ratio"] == 4.0 and overall["warp_ratio_median"] == 2.0
    assert overall["baseline_warp_ratio"] == 12.0 and overall["baseline_warp_ratio_median"] == 4.0
    assert overall["psnr"] == 17.0 and overall["ceiling_ssim"] == pytest.approx(2.8 / 3)
    assert overall["fullres_baseline_factor"] == 3.0  # over the styles that have it
    assert "ceiling_psnr" not in overall  # a mean of 100 dB caps and real ceilings says nothing
    assert summarize({}) == {}


def test_config_sizes_and_refusals():
    assert EvalConfig().sizes == [(256, 256), (512, 512)]
    one = EvalConfig(size=(48, 32))
    assert one.sizes == [(48, 32)] and one.size == (48, 32)
    two = EvalConfig(sizes=[(32, 32), (64, 48)])
    assert two.size == (32, 32) and two.at((64, 48)).size == (64, 48) and two.at((64, 48)).sizes == [(64, 48)]
    for bad, words in ((dict(sizes=[(32, 32), (32, 32)]), "given twice"), (dict(sizes=[]), "one or more"),
                       (dict(sizes=[(0, 32)]), "positive"), (dict(size=(32, 32), sizes=[(64, 64)]), "not both"),
                       (dict(draws=0), "draws must be")):
        with pytest.raises(ValueError, match=words):
            EvalConfig(**bad)


# --- a whole report at two sizes -------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    from streamstyle.model.config import preset
    from streamstyle.model.network import StreamStyleModel
    from streamstyle.model.weights import save_weights

    g = torch.Generator().manual_seed(13)
    return save_weights(perturb(StreamStyleModel(preset("tiny")), g), tmp_path_factory.mktemp("w") / "tiny")


OLD_KEYS = {"psnr", "ssim", "warp_ratio", "adherence", "baseline_psnr", "baseline_ssim", "baseline_warp_ratio",
            "baseline_adherence"}
NEW_KEYS = {"fidelity_psnr", "fidelity_ssim", "psnr_scaled", "adherence_margin", "warp_ratio_lowpass",
            "ceiling_psnr", "ceiling_ssim", "ceiling_psnr_scaled", "baseline_fidelity_psnr",
            "baseline_fidelity_ssim", "baseline_psnr_scaled", "baseline_adherence_margin",
            "baseline_warp_ratio_lowpass", "token_grid", "baseline_token_grid"}


def test_a_two_size_report_of_the_tiny_untrained_model(tiny_weights):
    from streamstyle.model.stylizer import Stylizer
    from streamstyle.model.weights import load_weights

    sty = Stylizer(load_weights(tiny_weights))
    cfg = EvalConfig(seeds=[HELD_SEED], sizes=[(32, 32), (64, 64)], frames=2,
                     prompts={"cel": ["cel"], "pencil": ["pencil"], "thermal": ["thermal"]})
    report = evaluate(sty, cfg, progress=False)
    assert list(report["sizes"]) == ["32x32", "64x64"]
    big = report["sizes"]["64x64"]
    # the old top-level keys stay, and are the largest size's
    assert report["size"] == [64, 64] and report["styles"] == big["styles"] and report["overall"] == big["overall"]
    assert report["frames"] == 2 and report["seeds"] == [HELD_SEED] and report["sequences"] == ["seed 1000000"]
    for name, table in report["sizes"].items():
        assert table["scaled_sigma"] == scaled_sigma(table["size"][1])
        for style, m in table["styles"].items():
            want = OLD_KEYS | NEW_KEYS | ({"fullres_baseline_factor"} if style in FULLRES_STYLES else set())
            assert set(m) == want, (name, style)
            assert all(math.isfinite(v) for v in m.values()), m
            assert -1 <= m["adherence_margin"] <= 1 and 0 <= m["adherence"] <= 1
            assert (m["ceiling_psnr"] < 100.0) == (style in HIDDEN_DETAIL)  # thermal's and cel's targets are exact
        overall = table["overall"]
        assert overall["warp_ratio_median"] == sorted(m["warp_ratio"] for m in table["styles"].values())[1]
        assert overall["fullres_baseline_factor"] == table["styles"]["pencil"]["fullres_baseline_factor"]
    assert report["sizes"]["32x32"]["styles"] != big["styles"]  # really scored twice, at two sizes
    json.dumps(report)  # the report is JSON as it stands
    text = format_report(report)
    assert "heldout 32x32" in text and "heldout 64x64" in text
    rows = text.splitlines()
    assert sum(r.startswith("OVERALL  ") for r in rows) == 2 and sum(r.startswith("MEDIAN  ") for r in rows) == 2
    assert "exact" in text
    # a report written before there were several sizes still prints
    old = {"set": "heldout", "size": [512, 512], "frames": 16, "steps": 2,
           "styles": {s: {k: m[k] for k in OLD_KEYS} for s, m in big["styles"].items()},
           "overall": {k: big["overall"][k] for k in OLD_KEYS}}
    assert "heldout 512x512" in format_report(old) and "\nOVERALL  " in format_report(old)


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "streamstyle", *args], capture_output=True, text=True, timeout=timeout)


def test_eval_cli_takes_a_list_of_sizes(tiny_weights, tmp_path):
    out = tmp_path / "r.json"
    run = _cli("eval", "--weights", str(tiny_weights), "--device", "cpu", "--seeds", str(HELD_SEED), "--styles",
               "cel,watercolor", "--size", "32x32,48x32", "--frames", "2", "--draws", "3", "--quiet", "--json", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert list(report["sizes"]) == ["32x32", "48x32"] and report["size"] == [48, 32] and report["draws"] == 3
    assert set(report["styles"]) == {"cel", "watercolor"}
    assert "heldout 32x32" in run.stdout and "heldout 48x32" in run.stdout and "fid_psnr" in run.stdout


@pytest.mark.parametrize("args, words", [
    (["--size", "32x32,32x32"], "given twice"),
    (["--draws", "0"], "draws must be"),
    (["--size", "32x32,0x0"], "[bad_resolution]"),
    (["--size", "32x32,"], None),  # a trailing comma is only a separator
])
def test_eval_cli_refuses_bad_sizes_and_draws(tiny_weights, args, words):
    if words is None:
        from streamstyle.tools.cli import parse_sizes

        assert parse_sizes("32x32,") == [(32, 32)]
        return
    run = _cli("eval", "--weights", str(tiny_weights), "--device", "cpu", "--quiet", *args, timeout=300)
    assert run.returncode == 2 and words in run.stderr, run.stderr


# --- eval-media ------------------------------------------------------------------------------------

def test_eval_media_writes_stills_and_a_side_by_side_video(tiny_weights, tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="the video extra is not installed")
    import imageio_ffmpeg
    from PIL import Image

    images, media = tmp_path / "images", tmp_path / "media"
    run = _cli("eval-media", "--weights", str(tiny_weights), "--device", "cpu", "--images", str(images),
               "--media", str(media), "--sizes", "64x64,96x48", "--video-size", "48x32", "--styles", "cel,pencil",
               "--frames", "2", "--video-frames", "3")
    assert run.returncode == 0, run.stderr[-3000:]
    names = sorted(p.name for p in images.iterdir())
    assert names == ["eval-cel-64x64.png", "eval-cel-96x48.png", "eval-pencil-64x64.png", "eval-pencil-96x48.png"]
    assert Image.open(images / "eval-pencil-96x48.png").size == (3 * 96, 48)  # input | ours | oracle
    reader = imageio_ffmpeg.read_frames(str(media / "eval-side-by-side.mp4"))
    meta = next(reader)
    assert tuple(meta["size"]) == (3 * 48, 32)  # input | baseline | ours
    assert sum(1 for _ in reader) == 2 * 3  # every frame of both styles, none dropped


@pytest.mark.parametrize("args, words", [
    (["--styles", "sepia"], "unknown style"),
    (["--video-size", "0x0"], "[bad_resolution]"),
    (["--sizes", "64x64,100000x100000"], "[bad_resolution]"),
    (["--colors", "1"], "2 to 256 colours"),
    (["--device", "gpu"], "[bad_device]"),
])
def test_eval_media_refuses_bad_input_before_writing(tiny_weights, tmp_path, args, words):
    run = _cli("eval-media", "--weights", str(tiny_weights), "--device", "cpu", "--images", str(tmp_path / "i"),
               "--media", str(tmp_path / "m"), "--video-frames", "1", "--frames", "1", *args, timeout=300)
    assert run.returncode == 2 and words in run.stderr, run.stderr
    assert not (tmp_path / "i").exists() and not (tmp_path / "m").exists()


# --- on a GPU --------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_averaged_oracles_and_a_report_agree_between_cpu_and_gpu(tiny_weights):
    from streamstyle.model.stylizer import Stylizer
    from streamstyle.model.weights import load_weights

    cfg = EvalConfig(seeds=[HELD_SEED], sizes=[(64, 64)], frames=2, prompts={"pencil": ["pencil"], "cel": ["cel"]})
    (cpu,) = reference_sequences(cfg, "cpu")
    (gpu,) = reference_sequences(cfg, "cuda")
    for style in HIDDEN_DETAIL:
        a, b = averaged_oracle(cpu.frames[1], style), averaged_oracle(gpu.frames[1], style).cpu()
        assert (a - b).abs().mean() < 1e-3, style  # same offsets on every device (drawn on the CPU)
    report = evaluate(Stylizer(load_weights(tiny_weights, device="cuda"), device="cuda"), cfg, progress=False)
    assert all(math.isfinite(v) for m in report["styles"].values() for v in m.values())
    assert report["styles"]["pencil"]["ceiling_psnr"] < 100.0 and report["styles"]["cel"]["ceiling_psnr"] == 100.0


def test_a_token_grid_needs_a_whole_token_and_a_stride():
    from streamstyle.model.training.losses import token_grid

    with pytest.raises(ValueError, match="needs a frame at least that large"):
        token_grid(torch.zeros(3, 8, 40), 16)
    with pytest.raises(ValueError, match="needs a frame at least that large"):
        token_grid(torch.zeros(3, 8, 8), 0)
