"""One frame function (`model/frame.py: stylize_frame`): training, serving and the bench run the same
computation. For the same inputs, state and noise, a training unroll (the objective's own per-frame
step, gradients on) equals the service's step; the bench's stage breakdown equals
`Stylizer.step_into`. The CUDA graph's agreement with the eager step is in tests/test_gpu.py."""

import copy
import dataclasses

import torch

from streamstyle.model.frame import FrameParams
from streamstyle.model.layout import reference_layout
from streamstyle.model.state import StateSpec
from streamstyle.model.stylizer import Stylizer
from streamstyle.model.training.objective import FrameDraw, frame_loss
from streamstyle.tools.bench import random_slot, stage_times

from .conftest import random_prompt_table


def rel_err(a, b):
    return ((a.detach() - b).norm() / b.norm()).item()


def pan(frame_factory, w, h, n, speed):
    """n frames of a static random scene under a horizontal pan of `speed` pixels a frame."""
    base = frame_factory(w + speed * n, h)
    frames = []
    for i in range(n):
        f = {k: v[:, speed * i:speed * i + w].contiguous() for k, v in base.items()}
        motion = torch.zeros(h, w, 2, dtype=torch.float16)
        motion[..., 0] = float(speed) if i else 0.0
        f["motion"] = motion
        frames.append(f)
    return frames


def agree(a, b, atol, frame):
    """a and b within `atol` at (nearly) every pixel. The history is stored in bf16: where the two
    sides' float32 frames (a batch of two against one at a time) straddle a bf16 rounding
    boundary, the next frame's history differs by one bf16 step (2^-8 at most in [0, 1]) at that
    pixel, which the refiner passes on: a few pixels may differ by up to that much more."""
    d = (a - b).abs()
    assert d.max() <= atol + 2 ** -8, (frame, d.max())
    assert (d > atol).float().mean() <= 0.01, (frame, (d > atol).float().mean())


def test_a_training_unroll_equals_the_services_steps(tiny_model, frame_factory, gen, tmp_path):
    """Two clips as one training batch (the objective's few-step frame, gradients on, a copy of the
    same weights in train mode), against two service sessions stepped eagerly, one read back as
    RGB and one written into an RGBA8 slot: per frame the same RGB, latent and attention sums.
    The clips differ in scene, prompt (one a blend), strength and cuts (clip 0 cuts at frame 2),
    and step counts change from frame to frame, so each of those paths is compared."""
    cfg = tiny_model.config
    w, h, n = 48, 32, 5
    layout = reference_layout(w, h)
    clips = [pan(frame_factory, w, h, n, 4), pan(frame_factory, w, h, n, 8)]
    prompts = [[("a", 0.7), ("b", 0.3)], "c"]
    seeds = [3, 11]
    steps = [2, 1, 4, 3, 2]
    strength = [[0.4, 0.6], [0.3, 0.5], [0.5, 0.5], [0.7, 0.2], [0.45, 0.35]]  # [frame][clip]
    cuts = [[False, False], [False, False], [True, False], [False, False], [False, False]]
    enc = random_prompt_table(cfg, tmp_path, gen)

    sty = Stylizer(tiny_model, enc)
    sessions = [sty.open_session(w, h, layout, seed=s) for s in seeds]
    for s, p in zip(sessions, prompts):
        sty.set_prompt(s, p)
    spec = StateSpec(cfg, w, h)
    served = []  # [frame] -> (rgb [2, 3, H, W], states of the two sessions)
    out = torch.zeros(w * h * 4 + 16, dtype=torch.uint8)
    for f in range(n):
        rgbs = []
        for c, s in enumerate(sessions):
            params = FrameParams(steps=steps[f], strength=strength[f][c], reset=cuts[f][c])
            if c == 0:
                rgbs.append(sty.step(s, clips[c][f], params))
            else:
                sty.step_into(s, clips[c][f], out, "rgba8", params)
                rgbs.append(out[:w * h * 4].view(h, w, 4)[..., :3].permute(2, 0, 1).float() / 255)
        served.append((torch.stack(rgbs), [spec.unflatten(sty.cache.read(s.id).clone()) for s in sessions]))

    model = copy.deepcopy(tiny_model).train()  # the same weights, as the trainer holds them
    ctx = [enc.context(p, cfg.max_prompts, cfg.max_prompt_tokens) for p in prompts]
    ctx = dataclasses.replace(ctx[0], **{k: torch.cat([getattr(x, k) for x in ctx]) for k in ("tokens", "bias", "pooled")})
    noise_gens = [torch.Generator().manual_seed(s) for s in seeds]  # each session's noise, as it draws it
    state = StateSpec(cfg, w, h, batch=2).zeros()
    for f in range(n):
        planes = {k: torch.stack([clips[0][f][k], clips[1][f][k]]) for k in clips[0][f]}
        target = torch.rand(2, 3, h, w, generator=gen)
        noise = torch.cat([torch.randn(spec.shapes()["latent"], generator=g) for g in noise_gens])
        draw = FrameDraw(strength=torch.tensor(strength[f]).view(2, 1), noise=noise, steps=steps[f], u=None)
        with torch.enable_grad():
            loss = frame_loss(model, layout, planes, w, h, target, ctx, state, torch.tensor(cuts[f]), draw)
        assert loss.rgb.requires_grad and loss.state.kv.requires_grad  # a training unroll, not inference
        rgb, states = served[f]
        agree(loss.rgb[0], rgb[0], 1e-4, f)
        agree(loss.rgb[1], rgb[1], 0.5 / 255 + 1e-4, f)  # the RGBA8 slot: rounded to nearest
        for c in range(2):  # float32 rounding apart (a batch of two against one at a time)
            assert rel_err(loss.state.latent[c], states[c].latent[0]) < 1e-5, (f, c)
            assert rel_err(loss.state.kv[:, c], states[c].kv[:, 0]) < 1e-5, (f, c)
            assert rel_err(loss.state.ks[:, c], states[c].ks[:, 0]) < 1e-5, (f, c)
        # as batch_loss threads it: the sums keep their gradients, the latent is detached, the frame
        # rounded to its stored dtype (bf16, as the service's cache keeps it)
        state = dataclasses.replace(loss.state, latent=loss.state.latent.detach(),
                                    image=loss.state.image.detach().to(StateSpec.dtype("image")))
    (loss.fm + loss.decoder).backward()
    assert all(p.grad is not None for p in model.dit.parameters() if p.requires_grad)
    # The comparison has teeth: the two clips' frames differ, and the cut changed clip 0's frame 2.
    assert (served[3][0][0] - served[3][0][1]).abs().max() > 0.05
    # (What a cut forgets is pinned in tests/test_history.py.)


def test_the_bench_stage_breakdown_is_the_services_step(tiny_model, gen):
    """`stage_times` runs the frame function with marks at each stage's end; its frames, run as a
    session of the same seed runs them, are byte for byte the ones `Stylizer.step_into` writes."""
    w, h, steps, reps = 40, 24, 3, 2
    layout = reference_layout(w, h)
    slot_gen = torch.Generator().set_state(gen.get_state())  # the slot stage_times will draw
    slot = random_slot(layout, w, h, "cpu", slot_gen)
    bench_out = torch.zeros(w * h * 4, dtype=torch.uint8)
    times = stage_times(tiny_model, w, h, steps, torch.device("cpu"), reps, gen, seed=5, out=bench_out)
    assert list(times) == ["pack", "warp", "dit_1", "dit_2", "dit_3", "history", "decode"]

    sty = Stylizer(tiny_model)
    s = sty.open_session(w, h, layout, seed=5)
    out = torch.zeros(w * h * 4, dtype=torch.uint8)
    first = None
    for i in range(reps + 1):
        sty.step_into(s, slot, out, "rgba8", FrameParams(steps=steps))
        first = out.clone() if first is None else first
    assert torch.equal(bench_out, out)
    assert not torch.equal(first, out)  # the state carried: the last frame is not the first one again
