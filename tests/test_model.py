"""The Hybrid DiT and the per-frame function."""

import copy
import dataclasses

import pytest
import torch

from streamstyle.model.config import preset
from streamstyle.model.errors import ConfigError
from streamstyle.model.dit import cond_channel_count
from streamstyle.model.frame import FrameParams, prepare_frame, stylize_frame
from streamstyle.model.layout import reference_layout
from streamstyle.model.network import StreamStyleModel
from streamstyle.model.state import StateSpec
from streamstyle.model.stylizer import null_context


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def dit_inputs(cfg, b, h, w, gen):
    lp = cfg.latent_patch
    t_count = (h // lp) * (w // lp)
    x = torch.randn(b, cfg.latent_channels, h, w, generator=gen)
    t = torch.rand(b, t_count, generator=gen)
    g = torch.randn(b, t_count, cfg.width, generator=gen)
    ctx = torch.randn(b, cfg.context_tokens, cfg.text_dim, generator=gen)
    bias = torch.full((b, cfg.context_tokens), float("-inf"))
    bias[:, :5] = -0.3
    bias[:, cfg.max_prompt_tokens:cfg.max_prompt_tokens + 3] = -1.2
    pooled = torch.randn(b, cfg.text_dim, generator=gen)
    return x, t, g, ctx, bias, pooled


def frame_inputs(model, frame_factory, w, h):
    """A random frame in the reference layout (its layout, planes and the network's inputs from
    them), and the empty prompt."""
    layout = reference_layout(w, h)
    planes = {k: v.unsqueeze(0) for k, v in frame_factory(w, h, layout).items()}
    return layout, planes, prepare_frame(model.config, layout, planes, w, h), null_context(model, torch.device("cpu"))


def test_streaming_equals_the_causal_sequence_form(tiny_model, gen):
    """Frames one at a time with carried state == the whole sequence at once (causal reference)."""
    cfg = tiny_model.config
    b, f, h, w = 2, 6, 6, 10  # latent 6x10 -> 3x5 tokens
    spec = StateSpec(cfg, w * cfg.latent_stride, h * cfg.latent_stride, batch=b)
    s0 = spec.zeros()
    s0.kv.uniform_(0, 1, generator=gen)
    s0.ks.uniform_(0, 1, generator=gen)
    seq = [dit_inputs(cfg, b, h, w, gen) for _ in range(f)]
    with torch.no_grad():
        kv, ks, outs = s0.kv, s0.ks, []
        for x, t, g, ctx, bias, pooled in seq:
            v, kv, ks = tiny_model.dit(x, t, g, ctx, bias, pooled, kv, ks)
            outs.append(v)
        # [B*F, ...] with frames of one sequence adjacent
        cat = [torch.stack([s[i] for s in seq], dim=1).flatten(0, 1) for i in range(6)]
        v_seq, kv_seq, ks_seq = tiny_model.dit(*cat, s0.kv, s0.ks, frames=f)
    v_steps = torch.stack(outs, dim=1).flatten(0, 1)
    assert rel_err(v_steps, v_seq) < 1e-5
    assert rel_err(kv, kv_seq) < 1e-5 and rel_err(ks, ks_seq) < 1e-5
    assert v_steps.std() > 0.1  # a live output, not a constant


def test_state_changes_the_output(tiny_model, gen):
    """Temporal state is used: the same frame with another history gives another velocity."""
    cfg = tiny_model.config
    spec = StateSpec(cfg, 32, 32)
    inputs = dit_inputs(cfg, 1, 8, 8, gen)
    a = spec.zeros()
    b = spec.zeros()
    b.kv.uniform_(0, 3, generator=gen)
    b.ks.uniform_(0, 3, generator=gen)
    with torch.no_grad():
        va, _, _ = tiny_model.dit(*inputs, a.kv, a.ks)
        vb, _, _ = tiny_model.dit(*inputs, b.kv, b.ks)
    assert rel_err(va, vb) > 1e-3


@pytest.mark.parametrize("w, h", [(64, 64), (96, 32), (32, 104), (8, 8)])
def test_any_aspect_ratio_the_stride_divides(tiny_model, frame_factory, gen, w, h):
    cfg = tiny_model.config
    layout = reference_layout(w, h)
    planes = {k: v.unsqueeze(0) for k, v in frame_factory(w, h, layout).items()}
    inputs = prepare_frame(cfg, layout, planes, w, h)
    assert inputs.cond.shape == (1, cond_channel_count(cfg), h // 4, w // 4)
    state = StateSpec(cfg, w, h).zeros()
    noise = torch.randn(state.latent.shape, generator=gen)
    with torch.no_grad():
        rgb, nxt = stylize_frame(tiny_model, layout, planes, w, h, null_context(tiny_model, torch.device("cpu")),
                                 state, noise, FrameParams(steps=2))
    assert rgb.shape == (1, 3, h, w)
    assert torch.isfinite(rgb).all() and rgb.min() >= 0 and rgb.max() <= 1
    assert nxt.valid.item() == 1.0 and state.valid.item() == 0.0  # the input state is not modified
    assert torch.equal(nxt.depth, inputs.depth)


def test_history_is_kept_where_valid_and_ignored_at_strength_one(tiny_model, frame_factory, gen):
    """With strength 0 and a static scene, the network starts from the previous latent itself;
    at strength 1 the previous frame cannot matter except through the attention sums."""
    cfg = tiny_model.config
    w, h = 32, 32
    layout, planes, inputs, ctx = frame_inputs(tiny_model, frame_factory, w, h)
    spec = StateSpec(cfg, w, h)
    s1, s2 = spec.zeros(), spec.zeros()
    for s in (s1, s2):
        s.valid.fill_(1.0)
        s.depth.copy_(inputs.depth)
    s1.latent.uniform_(-1, 1, generator=gen)
    s2.latent.uniform_(-1, 1, generator=gen)
    noise = torch.randn(s1.latent.shape, generator=gen)
    with torch.no_grad():
        outs = {p: [stylize_frame(tiny_model, layout, planes, w, h, ctx, s, noise, FrameParams(steps=1, strength=p))[0]
                    for s in (s1, s2)] for p in (0.0, 1.0)}
    assert rel_err(outs[0.0][0], outs[0.0][1]) > 1e-2  # history matters
    assert torch.allclose(outs[1.0][0], outs[1.0][1])  # history ignored at full noise


def test_mixed_precision_forward_runs_in_bfloat16(gen, frame_factory):
    model = StreamStyleModel(preset("tiny")).to(torch.bfloat16)
    cfg = model.config
    x, t, g, ctx, bias, pooled = dit_inputs(cfg, 1, 4, 4, gen)
    s = StateSpec(cfg, 16, 16).zeros()
    with torch.no_grad():
        v, kv, _ = model.dit(x.bfloat16(), t, g.bfloat16(), ctx.bfloat16(), bias, pooled.bfloat16(), s.kv, s.ks)
    assert v.dtype == torch.bfloat16 and kv.dtype == torch.float32 and torch.isfinite(v.float()).all()


def test_the_graphs_tensor_params_and_a_cut_compute_the_python_form(tiny_model, frame_factory, gen):
    """What the CUDA graph captures (strength and the cut flag as [1] device tensors) computes
    exactly what Python values do, for a kept and for a cut frame; and a cut is one thing: the
    frame after it equals the same frame from a fresh session's state (no sums, no history)."""
    cfg = tiny_model.config
    w, h = 32, 32
    layout, planes, inputs, ctx = frame_inputs(tiny_model, frame_factory, w, h)
    state = StateSpec(cfg, w, h).zeros()
    state.kv.uniform_(0, 1, generator=gen)
    state.ks.uniform_(0, 1, generator=gen)
    state.latent.uniform_(-1, 1, generator=gen)
    state.depth.copy_(inputs.depth)
    state.valid.fill_(1.0)
    noise = torch.randn(state.latent.shape, generator=gen)
    fresh = StateSpec(cfg, w, h).zeros()
    with torch.no_grad():
        results = {}
        for reset in (False, True):
            a, sa = stylize_frame(tiny_model, layout, planes, w, h, ctx, state, noise,
                                  FrameParams(steps=2, strength=0.4, reset=reset))
            b, sb = stylize_frame(tiny_model, layout, planes, w, h, ctx, state, noise,
                                  FrameParams(steps=2, strength=torch.tensor([0.4]), reset=torch.tensor([float(reset)])))
            assert torch.allclose(a, b, atol=1e-6) and torch.allclose(sa.kv, sb.kv, atol=1e-6)
            results[reset] = a, sa
        c, sc = stylize_frame(tiny_model, layout, planes, w, h, ctx, fresh, noise, FrameParams(steps=2, strength=0.4))
    assert torch.equal(results[True][0], c) and torch.equal(results[True][1].kv, sc.kv)
    assert rel_err(results[False][0], c) > 1e-2  # the history the cut drops mattered


def test_history_noise_scales_the_fresh_noise_only_where_history_is_kept(tiny_model, frame_factory, gen):
    """`history_noise` 0: a token that keeps its history starts at (1 - strength) * warped whatever
    the noise, so on a static scene two noise draws give the same frame; a token without history
    (here: all of them after a cut) still starts from the full draw. 1 is the old arithmetic."""
    from streamstyle.model.sampler import initial_latent

    cfg = tiny_model.config
    lp = cfg.latent_patch
    warped = torch.rand(1, 3, 2 * lp, 2 * lp, generator=gen) * 2 - 1
    noise = torch.randn(1, 3, 2 * lp, 2 * lp, generator=gen)
    t0 = torch.tensor([[0.5, 1.0, 0.3, 1.0]])  # 2 x 2 tokens of lp x lp latent pixels
    t = t0.view(1, 1, 2, 2).repeat_interleave(lp, 2).repeat_interleave(lp, 3)
    assert torch.equal(initial_latent(warped, t0, noise, (2, 2), lp), (1 - t) * warped + t * noise)
    x0 = initial_latent(warped, t0, noise, (2, 2), lp, history_noise=0.0)
    half = initial_latent(warped, t0, noise, (2, 2), lp, history_noise=0.5)
    kept = (t < 1).expand_as(warped)
    assert torch.equal(x0[kept], ((1 - t) * warped).expand_as(warped)[kept])
    assert torch.equal(x0[~kept], noise[~kept]) and torch.equal(half[~kept], noise[~kept])
    assert torch.allclose(half[kept], ((1 - t) * warped + 0.5 * t * noise)[kept])

    model = copy.deepcopy(tiny_model)
    w, h = 32, 32
    layout, planes, inputs, ctx = frame_inputs(model, frame_factory, w, h)
    spec = StateSpec(cfg, w, h)
    state = spec.zeros()
    state.valid.fill_(1.0)
    state.depth.copy_(inputs.depth)
    state.latent.uniform_(-1, 1, generator=gen)
    draws = [torch.randn(state.latent.shape, generator=gen) for _ in range(2)]
    outs = {}
    with torch.no_grad():
        for hn in (1.0, 0.0):
            model.config = dataclasses.replace(cfg, history_noise=hn)
            for reset in (False, True):
                outs[hn, reset] = [stylize_frame(model, layout, planes, w, h, ctx, state, n,
                                                 FrameParams(steps=2, strength=0.5, reset=reset))[0] for n in draws]
    assert torch.equal(outs[0.0, False][0], outs[0.0, False][1])  # kept everywhere: no noise reaches it
    assert rel_err(outs[1.0, False][0], outs[1.0, False][1]) > 1e-3  # as it was: the draw moves the frame
    assert rel_err(outs[0.0, True][0], outs[0.0, True][1]) > 1e-3  # after a cut: no history, full noise
    assert torch.equal(outs[0.0, True][0], outs[1.0, True][0])


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_history_noise_outside_0_1_is_refused(value):
    with pytest.raises(ConfigError, match="history_noise must lie in"):
        dataclasses.replace(preset("tiny"), history_noise=value).validate()
