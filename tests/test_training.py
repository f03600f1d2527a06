"""Training and evaluation of `tiny` on the CPU."""

import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from streamstyle.engine_plugins.reference_engine.oracles import STYLES
from streamstyle.model.training.evaluate import EvalConfig, Targets, evaluate, reference_sequences, score_sequence
from streamstyle.model.errors import ConfigError
from streamstyle.model.training.objective import ObjectiveConfig
from streamstyle.model.training.trainer import TrainConfig, Trainer
from streamstyle.tools.cli import main
from streamstyle.model.weights import load_weights
from streamstyle.model.stylizer import Stylizer

BASE = dict(preset="tiny", size=32, frames=2, batch=2, lr=3e-3, warmup=3, pool=2, prompts=False, distill=0.0)


def losses(folder):
    return [json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_few_steps_reduce_the_loss(tmp_path):
    """Measured on a fixed batch with fixed noise, before and after 30 steps (per-step losses draw
    fresh noise levels and are too noisy to compare)."""
    from streamstyle.model.stylizer import null_context
    from streamstyle.model.training.objective import StepRandomness, batch_loss

    trainer = Trainer(TrainConfig(out=str(tmp_path / "run"), steps=30, checkpoint_every=30, **BASE))
    clips = [trainer._clip(0), trainer._clip(1)]
    ctx = [null_context(trainer.model, torch.device("cpu"))] * 2

    def fixed_loss():
        with torch.no_grad():
            return sum(batch_loss(trainer.model, clips, ctx, StepRandomness.seeded(s, 0, range(2)))[1]["loss"]
                       for s in range(4)) / 4

    before = fixed_loss()
    trainer.run(progress=False)
    after = fixed_loss()
    assert after < 0.8 * before, (before, after)
    assert len(losses(tmp_path / "run")) == 30
    assert load_weights(tmp_path / "run").config.name == "tiny"  # the EMA checkpoint loads as a model


def test_resuming_continues_the_same_run(tmp_path):
    Trainer(TrainConfig(out=str(tmp_path / "a"), steps=6, checkpoint_every=3, **BASE)).run(progress=False)
    Trainer(TrainConfig(out=str(tmp_path / "b"), steps=3, checkpoint_every=3, **BASE)).run(progress=False)
    Trainer(TrainConfig(out=str(tmp_path / "b"), steps=6, resume=str(tmp_path / "b"), checkpoint_every=3,
                        **BASE)).run(progress=False)
    for name in ("raw.safetensors", "model.safetensors"):
        a, b = load_file(str(tmp_path / "a" / name)), load_file(str(tmp_path / "b" / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


def test_a_run_split_across_invocations_equals_one_run(tmp_path):
    """`stop_after` (and `time_limit`) checkpoint mid-schedule; resuming finishes the same run,
    the few-step phase included."""
    cfg = dict(BASE, distill=0.5, sampler_steps=(1, 2), steps=6, checkpoint_every=6)
    Trainer(TrainConfig(out=str(tmp_path / "a"), **cfg)).run(progress=False)
    notes = []
    Trainer(TrainConfig(out=str(tmp_path / "b"), stop_after=4, **cfg), log=notes.append).run(progress=False)
    assert "stopped after 4 steps at step 4 of 6" in notes[-1]
    Trainer(TrainConfig(out=str(tmp_path / "b"), resume=str(tmp_path / "b"), **cfg)).run(progress=False)
    a, b = load_file(str(tmp_path / "a" / "raw.safetensors")), load_file(str(tmp_path / "b" / "raw.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["flow"] * 3 + ["few-step"] * 3
    assert "latent" in rows[-1] and "flow" in rows[0]
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


def test_the_schedule_fits_the_time_limit(tmp_path):
    """`fit_steps`: after FIT_AFTER steps the cosine's length becomes what the rest of the time limit
    holds at their pace; the rows after the fit follow the fitted schedule, which the checkpoint keeps."""
    from streamstyle.model.training.trainer import FIT_AFTER, _lr, fitted_steps

    assert fitted_steps(10, 0.5, 20.0) == 50 and fitted_steps(10, 0.5, 0.2) == 11 and fitted_steps(10, 2.0, -1) == 11
    with pytest.raises(ValueError):
        fitted_steps(10, 0.0, 5.0)
    with pytest.raises(ConfigError, match="time_limit"):
        TrainConfig(out=str(tmp_path / "x"), fit_steps=True, **BASE).validate()
    cfg = TrainConfig(out=str(tmp_path / "run"), steps=100_000, checkpoint_every=100_000, time_limit=6.0,
                      fit_steps=True, **BASE)
    notes = []
    Trainer(cfg, log=notes.append).run(progress=False)
    fit = [n for n in notes if n.startswith("schedule fitted")]
    assert len(fit) == 1 and "(was 100000)" in fit[0], notes
    steps = int(fit[0].split(": ")[1].split()[0])
    assert FIT_AFTER < steps < 100_000
    saved = json.loads((tmp_path / "run" / "train_state.json").read_text())
    assert saved["config"]["steps"] == steps
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    fitted = dataclasses.replace(cfg, steps=steps)
    assert len(rows) > FIT_AFTER and all(r["lr"] == _lr(fitted, r["step"] - 1) for r in rows[FIT_AFTER:])
    assert rows[FIT_AFTER - 1]["lr"] == _lr(cfg, FIT_AFTER - 1) != _lr(fitted, FIT_AFTER - 1)


def test_the_few_step_phase_reduces_its_loss(tmp_path):
    """The distillation objective (the service's sampler unrolled, 1 and 2 steps) on a fixed batch."""
    from streamstyle.model.stylizer import null_context
    from streamstyle.model.training.objective import ObjectiveConfig, StepRandomness, batch_loss

    trainer = Trainer(TrainConfig(out=str(tmp_path / "run"), steps=30, checkpoint_every=30,
                                  **dict(BASE, distill=1.0, sampler_steps=(1, 2))))
    clips = [trainer._clip(0), trainer._clip(1)]
    ctx = [null_context(trainer.model, torch.device("cpu"))] * 2
    few = ObjectiveConfig(sampler_steps=(1, 2))

    def fixed_loss():
        with torch.no_grad():
            return sum(batch_loss(trainer.model, clips, ctx, StepRandomness.seeded(s, 0, range(2)), few)[1]["loss"]
                       for s in range(4)) / 4

    before = fixed_loss()
    trainer.run(progress=False)
    assert fixed_loss() < 0.8 * before


def test_the_clip_bank_is_a_function_of_the_draw_count(tmp_path):
    from streamstyle.model.training.data import ClipBank, ReferenceClips

    src = ReferenceClips(32, 32, 2, seed=3)
    bank = ClipBank(src, size=3, refresh=2, seed=3)
    # which shot each slot holds: shots 0-2 first, then 3, 4, 5, 6 ... into slots 0, 1, 2, 0 ...
    assert [bank.shot_index(s, 0) for s in range(3)] == [0, 1, 2]
    assert [bank.shot_index(s, 2) for s in range(3)] == [3, 1, 2]
    assert [bank.shot_index(s, 9) for s in range(3)] == [6, 4, 5]  # 4 replacements: 3, 4, 5, 6
    drawn = [bank.clip(i) for i in range(12)]
    assert bank.renders < 12  # shots are reused across draws
    fresh = ClipBank(src, size=3, refresh=2, seed=3)
    again = fresh.clip(11)  # a resumed run: same clip without drawing the ones before
    assert again.style == drawn[11].style and again.prompt == drawn[11].prompt
    assert all(torch.equal(a["color"], b["color"]) for a, b in zip(again.planes, drawn[11].planes))
    assert all(torch.equal(a, b) for a, b in zip(again.targets, drawn[11].targets))
    assert len({c.style for c in drawn}) > 3  # one shot serves many styles
    # Shots rendered in a background process (a real second process) give the same clips.
    bg = ClipBank(src, size=3, refresh=2, seed=3)
    bg.start_workers(1, first_draw=9)
    procs = list(bg.workers.procs)
    try:
        for i in (11, 9, 10):
            c = bg.clip(i)
            assert c.style == drawn[i].style and c.prompt == drawn[i].prompt
            assert all(torch.equal(a["color"], b["color"]) for a, b in zip(c.planes, drawn[i].planes))
            assert all(torch.equal(a, b) for a, b in zip(c.targets, drawn[i].targets))
    finally:
        bg.close()
    assert procs and all(not p.is_alive() for p in procs)
    # A bank's clip equals the style oracle of the rendered frames (to float16 precision).
    assert drawn[0].targets[0].shape == (32, 32, 3) and drawn[0].targets[0].dtype == torch.float32


def test_weights_alone_are_enough_to_resume(tmp_path):
    Trainer(TrainConfig(out=str(tmp_path / "a"), steps=2, checkpoint_every=2, **BASE)).run(progress=False)
    for extra in ("raw.safetensors", "optimizer.safetensors", "train_state.json"):
        (tmp_path / "a" / extra).unlink()
    notes = []
    t = Trainer(TrainConfig(out=str(tmp_path / "b"), steps=2, resume=str(tmp_path / "a"), **BASE), log=notes.append)
    assert t.step == 0 and "optimizer starts afresh" in notes[0]
    t.run(progress=False)
    assert len(losses(tmp_path / "b")) == 2


def test_fine_tuning_on_a_capture(tmp_path):
    cap = tmp_path / "cap"
    run = subprocess.run([sys.executable, "-m", "streamstyle", "render", "--seed", "3", "--frames", "3", "--size",
                          "32x32", "--out", str(cap), "--styles", "noir", "--quiet"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    Trainer(TrainConfig(out=str(tmp_path / "base"), steps=1, **BASE)).run(progress=False)
    cfg = TrainConfig(out=str(tmp_path / "tuned"), steps=3, init=str(tmp_path / "base"), data=(str(cap),),
                      reference_weight=0.0, **{**BASE, "pool": 0})
    trainer = Trainer(cfg)
    assert trainer.source.clip(0).style == "noir"  # clips come from the capture
    trainer.run(progress=False)
    assert len(losses(tmp_path / "tuned")) == 3


@pytest.fixture(scope="module")
def eval_targets():
    cfg = EvalConfig(seeds=[1000000], size=(48, 48), frames=4)
    (seq,) = reference_sequences(cfg, "cpu")
    return Targets.of(seq.frames, ["cel", "pencil"])


@pytest.mark.parametrize("style", ["cel", "pencil"])
def test_metrics_are_sane_on_constructed_cases(eval_targets, style):
    oracles = eval_targets.oracles
    perfect = score_sequence(oracles[style], eval_targets, style)
    assert perfect.psnr == 100.0 and perfect.ssim > 0.999 and perfect.adherence == 1.0
    assert abs(perfect.warp_ratio - 1.0) < 1e-6
    const = score_sequence([torch.full_like(oracles[style][0], 0.5)] * 4, eval_targets, style)
    assert const.psnr < 20 and const.adherence < 0.5
    shuffled = score_sequence([oracles[style][i] for i in (2, 0, 3, 1)], eval_targets, style)
    assert shuffled.warp_ratio > 1.3 * perfect.warp_ratio


def test_eval_runs_end_to_end_on_tiny(tmp_path):
    Trainer(TrainConfig(out=str(tmp_path / "m"), steps=1, **BASE)).run(progress=False)
    sty = Stylizer(load_weights(tmp_path / "m"))
    report = evaluate(sty, EvalConfig(seeds=[1000000], size=(32, 32), frames=3,
                                      prompts={"cel": ["cel"], "noir": ["noir"]}), progress=False)
    assert set(report["styles"]) == {"cel", "noir"}
    for key in ("psnr", "ssim", "warp_ratio", "adherence", "baseline_psnr", "baseline_warp_ratio"):
        assert key in report["overall"] and report["overall"][key] == report["overall"][key]  # not NaN
    assert 0 <= report["overall"]["adherence"] <= 1
    from streamstyle.model.training.evaluate import markdown_tables

    table = markdown_tables(report).splitlines()  # the model card's form: a row per style, then overall
    rows = [r for r in table if r.startswith("| ")]
    assert rows[0].startswith("| style | PSNR |") and [r.split(" | ")[0] for r in rows[2:]] == ["| cel", "| noir",
                                                                                              "| **overall**"]
    assert f"| {report['styles']['cel']['psnr']:.2f} |" in rows[2] and rows[-1].count("|") == rows[0].count("|")
    with pytest.raises(ValueError, match="unknown styles: sepia"):
        evaluate(sty, EvalConfig(seeds=[1000000], size=(32, 32), frames=2, prompts={"sepia": ["x"]}), progress=False)


def test_eval_scores_the_split_it_names_with_that_splits_phrasings(tiny_model, tmp_path, capsys):
    """`eval --set train` scores training scenes with the training phrasings and says "train" on
    its report (it once took the held-out phrasings and labelled the report "heldout"); the
    default is the held-out split's; `--seeds` picks scenes within the named split."""
    from streamstyle.engine_plugins.reference_engine.prompts import split
    from streamstyle.model.weights import save_weights

    weights = save_weights(tiny_model, tmp_path / "w")
    common = ["eval", "--weights", str(weights), "--styles", "cel", "--size", "32x32", "--frames", "2",
              "--device", "cpu", "--quiet"]
    for name, seeds in (("train", "0"), ("heldout", "1000000")):
        out = tmp_path / f"{name}.json"
        args = common + ["--seeds", seeds, "--json", str(out)] + (["--set", name] if name == "train" else [])
        assert main(args) == 0, capsys.readouterr().err
        report = json.loads(out.read_text())
        assert report["set"] == name and report["seeds"] == [int(seeds)]
        assert report["prompts"]["cel"] == list(split(name).phrasings["cel"])
    assert split("train").phrasings["cel"] != split("heldout").phrasings["cel"]  # the check has teeth
    assert main(common + ["--set", "everything"]) == 2
    assert "unknown split 'everything'" in capsys.readouterr().err


def test_eval_refuses_a_strength_outside_0_1():
    run = subprocess.run([sys.executable, "-m", "streamstyle", "eval", "--strength", "1.5", "--device", "cpu"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "--strength must lie in [0, 1]" in run.stderr


@pytest.mark.parametrize("bad, words", [
    (dict(workers=2), "give bank > 0 with workers"),
    (dict(bank=-1), "bank must be 0"),
    (dict(distill=1.5), "share of steps in few-step mode"),
    (dict(sampler_steps=(1, 5)), "step counts from 1 to 4"),
    (dict(refresh=0), "refresh must be at least 1"),
    (dict(exact_latents=0.5), "it needs freeze_dit"),
    (dict(exact_latents=1.5, freeze_dit=True, pool=2), "share \\(0 to 1\\)"),
    (dict(grid_weight=-1.0), "grid_weight must be a finite number, 0 or more"),
    (dict(grid_weight=float("nan")), "grid_weight must be a finite number"),
])
def test_bad_training_settings_are_refused(bad, words):
    from streamstyle.model.errors import ConfigError

    with pytest.raises(ConfigError, match=words):
        TrainConfig(**bad).validate()


def test_exact_latents_give_a_share_of_clips_the_oracles_latent(tmp_path):
    """`exact_latents`: a clip drawn for it reaches the refiner with its oracle's own latent (the
    latent target of each frame, shaped as the DiT's), the others with the frozen DiT's; the draw is
    the seed's, the step's and the clip's, so a rerun (or a resumed run) draws the same; and a run
    with every clip exact trains (its refined loss on those latents falls)."""
    from streamstyle.model.stylizer import null_context
    from streamstyle.model.training.objective import StepRandomness, batch_loss, latent_target, oracle_latents

    cfg = TrainConfig(out=str(tmp_path / "run"), steps=30, checkpoint_every=30, freeze_dit=True, refiner_lr_scale=4,
                      sampler_steps=(1, 2), exact_latents=1.0, **dict(BASE, frames=3))
    trainer = Trainer(cfg)
    clips = [trainer._clip(0), trainer._clip(1)]
    ctx = [null_context(trainer.model, torch.device("cpu"))] * 2
    dit = trainer._dit_latents([0, 1], clips, ctx)
    exact = trainer._mix_exact_latents(0, [0, 1], clips, dit)
    for clip, lat, ref in zip(clips, exact, dit):
        for f, (z, r) in enumerate(zip(lat, ref)):
            want = latent_target(clip.targets[f].permute(2, 0, 1)[None].float(), trainer.model.config.latent_stride)
            assert z.shape == r.shape and torch.equal(z[:, :, :want.shape[2], :want.shape[3]], want)
            assert not torch.equal(z, r)  # the DiT's latent is not the oracle's: the swap is visible
    half = Trainer(TrainConfig(**{**dataclasses.asdict(cfg), "objective": cfg.objective, "exact_latents": 0.5,
                                  "out": str(tmp_path / "half")}))
    picks = [[lat is not d for lat, d in zip(half._mix_exact_latents(step, [0, 1], clips, dit), dit)]
             for step in range(40)]
    again = [[lat is not d for lat, d in zip(half._mix_exact_latents(step, [0, 1], clips, dit), dit)]
             for step in range(40)]
    assert picks == again and 20 < sum(map(sum, picks)) < 60  # about half of 80, the same each time

    def fixed_loss():
        with torch.no_grad():
            return sum(batch_loss(trainer.model, clips, ctx, StepRandomness.seeded(s, 0, range(2)),
                                  cfg.objective, [oracle_latents(c, trainer.model.config, torch.device("cpu"))
                                                  for c in clips])[1]["loss"] for s in range(4)) / 4

    before = fixed_loss()
    trainer._latents.clear()
    trainer.run(progress=False)
    assert fixed_loss() < 0.93 * before  # (0.062 -> 0.055 here: an exact latent starts nearer)
    assert not trainer._latents  # every clip exact: the run never ran the frozen DiT


def test_a_frozen_dit_run_trains_the_refiner_alone(tmp_path):
    """`freeze_dit`: the DiT's weights stay as they were, the refiner's move, and the refined
    frame's loss on a fixed batch (the pool's own cached latents, fixed draws) falls."""
    from streamstyle.model.stylizer import null_context
    from streamstyle.model.training.objective import StepRandomness, batch_loss

    cfg = TrainConfig(out=str(tmp_path / "run"), steps=30, checkpoint_every=30, freeze_dit=True, refiner_lr_scale=4,
                      sampler_steps=(1, 2), **dict(BASE, frames=3))
    trainer = Trainer(cfg)
    before_weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    clips = [trainer._clip(0), trainer._clip(1)]
    ctx = [null_context(trainer.model, torch.device("cpu"))] * 2
    latents = trainer._dit_latents([0, 1], clips, ctx)
    assert len(latents[0]) == 3 and latents[0][0].shape == (1, 3, 8, 8)

    def fixed_loss():
        with torch.no_grad():
            return sum(batch_loss(trainer.model, clips, ctx, StepRandomness.seeded(s, 0, range(2)),
                                  cfg.objective, latents)[1]["loss"] for s in range(4)) / 4

    before = fixed_loss()
    trainer.run(progress=False)
    assert fixed_loss() < 0.8 * before
    after = load_file(str(tmp_path / "run" / "raw.safetensors"))
    dit = [k for k in after if not k.startswith("refiner.")]
    assert dit and all(torch.equal(after[k], before_weights[k]) for k in dit)
    assert any(not torch.equal(after[k], before_weights[k]) for k in after if k.startswith("refiner."))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in rows} == {"refiner"} and all("latent" in r for r in rows)
    # the cache is the frozen DiT's: a trainer resumed from the run computes the same latents
    again = Trainer(TrainConfig(**{**dataclasses.asdict(cfg), "objective": cfg.objective,
                                   "resume": str(tmp_path / "run"), "steps": 31}))
    assert all(torch.equal(a, b) for a, b in zip(again._dit_latents([0], clips[:1], ctx[:1])[0], latents[0]))


def test_frozen_dit_training_refines_as_the_service_does(tiny_model, gen):
    """The frozen-DiT objective's frames (cached latents, the refiner's own history) equal what the
    frame function produces over the same clip: `dit_latents` is the service's rollout at the
    latent, and `frozen_frame_loss` finishes each frame as `stylize_frame` does, cut included."""
    from streamstyle.model.frame import FrameParams, stylize_frame
    from streamstyle.model.state import StateSpec
    from streamstyle.model.stylizer import null_context
    from streamstyle.model.training.data import ReferenceClips
    from streamstyle.model.training.objective import (FrameDraw, ObjectiveConfig, _generator, dit_latents,
                                                      frozen_frame_loss)

    clip = ReferenceClips(32, 32, 4, seed=5).clip(0)
    clip.cut[2] = True  # a cut mid-clip: both sides must drop the history there
    ctx = null_context(tiny_model, torch.device("cpu"))
    cfg = ObjectiveConfig()
    latents = dit_latents(tiny_model, [clip], [ctx], [_generator(1, 2)], (2,), cfg)[0]

    # the service's side, drawn as dit_latents draws: K, strength, then each frame's noise
    g = _generator(1, 2)
    torch.randint(1, (1,), generator=g)
    strength = cfg.strength_min + (cfg.strength_max - cfg.strength_min) * float(torch.rand(1, generator=g))
    spec = StateSpec(tiny_model.config, 32, 32)
    served, state = [], spec.zeros()
    with torch.no_grad():
        for f, planes in enumerate(clip.planes):
            noise = torch.randn(spec.shapes()["latent"], generator=g)
            rgb, state = stylize_frame(tiny_model, clip.layout, {k: v[None] for k, v in planes.items()}, 32, 32, ctx,
                                       state, noise, FrameParams(steps=2, strength=strength, reset=clip.cut[f]))
            assert torch.equal(state.latent, latents[f])
            served.append(rgb)
            state = dataclasses.replace(state, image=state.image.to(StateSpec.dtype("image")))

    state = spec.zeros()
    with torch.no_grad():
        for f, planes in enumerate(clip.planes):
            draw = FrameDraw(strength=torch.full((1, 1), 0.5), noise=torch.zeros(spec.shapes()["latent"]), steps=None,
                             u=None)
            target = clip.targets[f].permute(2, 0, 1)[None]
            out = frozen_frame_loss(tiny_model, clip.layout, {k: v[None] for k, v in planes.items()}, 32, 32, target,
                                    ctx, state, torch.tensor([clip.cut[f]]), draw, latents[f], None, cfg)
            assert (out.rgb - served[f]).abs().max() < 1e-5, f
            state = dataclasses.replace(out.state, image=out.state.image.to(StateSpec.dtype("image")))
    assert (served[1] - served[0]).abs().max() > 1e-3  # the frames differ: the comparison has teeth


def test_the_frozen_dits_latents_are_each_clips_own_whatever_the_batch(tiny_model):
    """`dit_latents` over several clips (grouped by their drawn K into batches, with per-clip
    strengths and cuts) gives each clip what it gives that clip alone, from the same generator."""
    from streamstyle.model.stylizer import null_context
    from streamstyle.model.training.data import ReferenceClips
    from streamstyle.model.training.objective import _generator, dit_latents

    source = ReferenceClips(32, 32, 3, seed=4)
    clips = [source.clip(i) for i in range(5)]
    clips[1].cut[1] = True  # a cut in one clip of a batch only
    ctx = [null_context(tiny_model, torch.device("cpu"))] * 5
    together = dit_latents(tiny_model, clips, ctx, [_generator(9, i) for i in range(5)], (1, 2))
    ks = {int(torch.randint(2, (1,), generator=_generator(9, i))) for i in range(5)}
    assert ks == {0, 1}  # both step counts drawn: two batches, one of several clips
    for i, clip in enumerate(clips):
        alone = dit_latents(tiny_model, [clip], [ctx[i]], [_generator(9, i)], (1, 2))[0]
        assert len(alone) == 3
        for a, b in zip(together[i], alone):
            assert a.shape == (1, 3, 8, 8) and (a - b).abs().max() < 1e-5, i
    assert (together[0][2] - together[2][2]).abs().max() > 1e-2  # the clips differ: the test has teeth


def test_freezing_the_dit_needs_a_pool():
    from streamstyle.model.errors import ConfigError

    with pytest.raises(ConfigError, match="give pool > 0"):
        TrainConfig(freeze_dit=True).validate()


def test_resume_alone_continues_a_frozen_dit_run_with_its_own_settings(tmp_path, capsys):
    """`train --resume FOLDER` with nothing else continues the saved run as it was set up (its
    freeze_dit, pool, lr, sampler steps, ...), not with the command line's defaults: a frozen-DiT
    run resumed that way once failed to load its optimizer (one parameter group against two) and
    would otherwise have trained the DiT at the default lr. A setting the command line changes that
    would change what the run learns is refused; the run's folder is left as it was."""
    from streamstyle.model.training.trainer import resumed_config

    out = tmp_path / "run"
    first = ["train", "--out", str(out), "--preset", "tiny", "--size", "32", "--frames", "2", "--batch", "2",
             "--steps", "6", "--lr", "2e-3", "--warmup", "1", "--pool", "2", "--freeze-dit", "--sampler-steps",
             "1,2", "--no-prompts", "--device", "cpu", "--checkpoint-every", "1000", "--stop-after", "1", "--quiet"]
    assert main(first) == 0
    saved = json.loads((out / "train_state.json").read_text())
    assert saved["step"] == 1 and saved["config"]["freeze_dit"] is True
    dit_before = {k: v for k, v in load_file(str(out / "raw.safetensors")).items() if not k.startswith("refiner.")}

    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--device", "cpu", "--stop-after", "1", "--quiet"]) == 0
    assert f"resumed {out} at step 1" in capsys.readouterr().out
    state = json.loads((out / "train_state.json").read_text())
    assert state["step"] == 2  # written into the resumed folder, not the default --out
    for key in ("freeze_dit", "pool", "lr", "sampler_steps", "size", "frames", "prompts", "warmup", "steps"):
        assert state["config"][key] == saved["config"][key], key
    raw = load_file(str(out / "raw.safetensors"))
    assert all(torch.equal(raw[k], v) for k, v in dit_before.items())  # the DiT stayed frozen

    before = (out / "train_state.json").read_text()
    rc = main(["train", "--resume", str(out), "--device", "cpu", "--lr", "1", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "[bad_config]" in err and "--lr 1.0 differs from the resumed run's 0.002" in err, err
    assert (out / "train_state.json").read_text() == before
    # What a resume may change: the schedule's length; a tuple setting reads back as a tuple.
    cfg = resumed_config(TrainConfig(resume=str(out), steps=9, lr=1.0), {"steps"})
    assert cfg.steps == 9 and cfg.lr == 2e-3 and cfg.sampler_steps == (1, 2) and cfg.out == str(out)
    assert isinstance(cfg.objective, ObjectiveConfig) and cfg.objective == TrainConfig().objective


def test_a_compiled_run_trains_as_the_eager_one(tmp_path):
    """`compile=True` runs the DiT's blocks and the refiner through torch.compile: three steps of
    the few-step phase give the eager run's losses (each after the updates before it, so the
    gradients agree too, up to the fused kernels' rounding), and a frozen DiT is left uncompiled (it
    runs without gradients, through the Triton kernels)."""
    cfg = dict(BASE, steps=3, checkpoint_every=3, distill=1.0, sampler_steps=(1, 2))
    runs = {}
    for compiled in (False, True):
        trainer = Trainer(TrainConfig(out=str(tmp_path / f"run-{compiled}"), compile=compiled, **cfg))
        assert (trainer.model.dit.blocks[0]._compiled_call_impl is not None) == compiled
        assert (trainer.model.refiner._compiled_call_impl is not None) == compiled
        trainer.run(progress=False)
        runs[compiled] = losses(tmp_path / f"run-{compiled}")
    assert len(runs[True]) == 3
    assert runs[True] == pytest.approx(runs[False], rel=1e-4)
    assert runs[True][0] != runs[True][2]  # the weights moved between them
    frozen = Trainer(TrainConfig(out=str(tmp_path / "frozen"), compile=True, freeze_dit=True, **dict(cfg, distill=0.0)))
    assert frozen.model.dit.blocks[0]._compiled_call_impl is None
    assert frozen.model.refiner._compiled_call_impl is not None


def test_a_deeper_refiner_grown_from_init_starts_as_it_and_learns(tiny_model, frame_factory, gen, tmp_path):
    """`train --refiner-depth 1` from a two-pass checkpoint: the new residual pass starts as the
    identity (the grown model's frame equals the checkpoint's), a few steps move it, and the run's
    weights load with the depth in their config. Fewer passes than the checkpoint has, or a
    negative count, are refused before any work."""
    from streamstyle.model.errors import ConfigError
    from streamstyle.model.frame import FrameParams
    from streamstyle.model.layout import reference_layout
    from streamstyle.model.weights import save_weights

    src = tmp_path / "src"
    save_weights(tiny_model, src)
    cfg = TrainConfig(out=str(tmp_path / "run"), init=str(src), refiner_depth=1, steps=6, checkpoint_every=6,
                      **{k: v for k, v in BASE.items() if k != "preset"})
    trainer = Trainer(cfg)
    grown = trainer.model
    assert len(grown.refiner.middle) == 1 and grown.config.refiner_depth == 1
    w, h = 32, 32
    layout = reference_layout(w, h)
    slot = torch.zeros(layout.slot_bytes(w, h), dtype=torch.uint8)
    for name, view in layout.view(slot, w, h).items():
        view.copy_(frame_factory(w, h, layout)[name])
    outs = []
    for model in (tiny_model, grown.eval()):
        sty = Stylizer(model)
        s = sty.open_session(w, h, layout, seed=5)
        outs.append(sty.step(s, slot, FrameParams(steps=2, strength=0.5)))
    assert torch.equal(outs[0], outs[1])
    before = {k: v.clone() for k, v in grown.refiner.middle.state_dict().items()}
    grown.train()
    trainer.run(progress=False)
    run = load_weights(tmp_path / "run")
    assert run.config.refiner_depth == 1
    moved = run.refiner.middle.state_dict()
    assert any(not torch.allclose(moved[k], before[k]) for k in before)
    deep = tmp_path / "deep"
    save_weights(run, deep)
    with pytest.raises(ConfigError, match="would drop trained ones"):
        TrainConfig(out=str(tmp_path / "x"), init=str(deep), refiner_depth=0, **BASE).validate()
    with pytest.raises(ConfigError, match="refiner_depth must be a non-negative integer"):
        TrainConfig(out=str(tmp_path / "x"), refiner_depth=-1, **BASE).validate()


def test_object_colours_grown_from_init_start_as_its_function_and_learn(tiny_model, frame_factory, tmp_path):
    """`train --id-colours 4` from a checkpoint without them: the grown model's frame equals the
    checkpoint's (the style's matrix starts at zero), a few steps move that matrix, and then the
    table gives the prompts different colours; a frame without ids is the same as before. A rank
    other than the checkpoint's own, or a negative one, is refused before any work."""
    from streamstyle.model.errors import ConfigError
    from streamstyle.model.frame import FrameParams
    from streamstyle.model.layout import GBufferLayout, reference_layout
    from streamstyle.model.network import StreamStyleModel
    from streamstyle.model.weights import save_weights

    src = tmp_path / "src"
    save_weights(tiny_model, src)
    cfg = TrainConfig(out=str(tmp_path / "run"), init=str(src), id_colours=4, steps=6, checkpoint_every=6,
                      **{k: v for k, v in BASE.items() if k not in ("preset", "lr")}, lr=3e-2)
    trainer = Trainer(cfg)
    grown = trainer.model
    assert grown.config.id_colours == 4 and tuple(grown.refiner.id_colours.weight.shape) == (256, 4)
    w, h = 32, 32
    layout = reference_layout(w, h)
    slot = torch.zeros(layout.slot_bytes(w, h), dtype=torch.uint8)
    for name, view in layout.view(slot, w, h).items():
        view.copy_(frame_factory(w, h, layout)[name])

    def frame(model, prompt=None, lay=layout, data=slot):
        sty = Stylizer(model)
        s = sty.open_session(w, h, lay, seed=5)
        if prompt is not None:
            sty.set_prompt(s, prompt)
        return sty.step(s, data, FrameParams(steps=2, strength=0.5))

    assert torch.equal(frame(tiny_model), frame(grown.eval()))
    grown.train()
    trainer.run(progress=False)
    run = load_weights(tmp_path / "run")
    assert run.config.id_colours == 4
    assert run.refiner.style_colours.bias.abs().max() > 0  # learned (the empty prompt's: prompts=False)
    with torch.no_grad():
        run.refiner.style_colours.weight.normal_(0.0, 0.1)
        tables = run.refiner.colour_table(torch.randn(2, run.config.text_dim), 2)
    assert tables.shape == (2, 256, 3) and (tables[0] - tables[1]).abs().max() > 0  # per prompt
    no_ids = GBufferLayout(tuple(c for c in layout.channels if c.name != "ids")).validate(width=w, height=h)
    without = dataclasses.replace(run.config, id_colours=0)
    plain = StreamStyleModel(without).eval()
    plain.load_state_dict({k: v for k, v in run.state_dict().items() if "colours" not in k})
    assert torch.equal(frame(run, lay=no_ids), frame(plain, lay=no_ids))
    assert not torch.equal(frame(run), frame(plain))  # with ids, the colours are drawn
    coloured = tmp_path / "coloured"
    save_weights(run, coloured)
    with pytest.raises(ConfigError, match="would drop them"):
        TrainConfig(out=str(tmp_path / "x"), init=str(coloured), id_colours=2, **BASE).validate()
    with pytest.raises(ConfigError, match="id_colours must be a non-negative integer"):
        TrainConfig(out=str(tmp_path / "x"), id_colours=-1, **BASE).validate()


def test_a_deeper_refiner_costs_its_pass_in_model_info():
    from streamstyle.model.config import preset
    from streamstyle.model.info import model_info

    base = preset("default")
    a = model_info(base, 1920, 1080)
    b = model_info(dataclasses.replace(base, refiner_depth=1).validate(), 1920, 1080)
    n, k = 1920 * 1088, base.refiner_width
    assert b["flops_per_frame"] - a["flops_per_frame"] == 2 * n * k * k * 9 + 2 * n * k * k
    assert b["parameters_refiner"] - a["parameters_refiner"] == k * k * 9 + k + k * k + k + base.text_dim * k + k
    assert b["bytes_per_frame"] > a["bytes_per_frame"]


@pytest.mark.parametrize("term, weights", [("edge", {"edge_weight": 6.0}), ("perceptual", {"perceptual_weight": 1.0}),
                                           ("temporal", {"temporal_weight": 2.0}), ("grid", {"grid_weight": 20.0})])
def test_a_few_steps_reduce_each_image_and_temporal_term(tmp_path, term, weights):
    """Each term the objective adds to the plain losses (the refined frame's edges, random-CNN
    features, token-grid pattern, and its change against the oracle's) falls over 30 CPU steps of
    `tiny` in the few-step phase (what the sampler produces), measured on a fixed batch with fixed
    noise, and falls further with that term weighted up than with the default weights: the weight
    reaches the gradient. The grid term goes through `TrainConfig.grid_weight` (the CLI's
    --grid-weight), the others through the objective."""
    from streamstyle.model.stylizer import null_context
    from streamstyle.model.training.objective import ObjectiveConfig, StepRandomness, batch_loss

    def trained(name, **changes):
        cfg = TrainConfig(out=str(tmp_path / name), steps=30, checkpoint_every=30,
                          **{**BASE, "frames": 3, "distill": 1.0, **changes})
        trainer = Trainer(cfg)
        clips = [trainer._clip(0), trainer._clip(1)]
        ctx = [null_context(trainer.model, torch.device("cpu"))] * 2
        measure = ObjectiveConfig(sampler_steps=tuple(cfg.sampler_steps))  # the parts are unweighted

        def fixed_term():
            with torch.no_grad():
                return sum(batch_loss(trainer.model, clips, ctx, StepRandomness.seeded(s, 0, range(2)),
                                      measure)[1][term] for s in range(4)) / 4

        before = fixed_term()
        trainer.run(progress=False)
        assert term in json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1])
        return before, fixed_term()

    up = {"grid_weight": weights["grid_weight"]} if term == "grid" else {"objective": ObjectiveConfig(**weights)}
    before, after = trained("up", **up)
    same_start, plain = trained("plain")
    assert before == same_start and before > 0
    assert after < 0.75 * before and after < 0.97 * plain, (term, before, plain, after)
