"""The per-frame entry point: sessions through the paged cache, and every rejection leaving all
sessions as they were."""

import pytest
import torch

from streamstyle.model.cache import CacheConfig
from streamstyle.model.errors import (CacheFullError, InputError, LayoutError, ResolutionError,
                                      SessionError, SessionEvictedError)
from streamstyle.model.frame import FrameParams, stylize_frame
from streamstyle.model.layout import Channel, GBufferLayout, reference_layout
from streamstyle.model.state import StateSpec
from streamstyle.model.stylizer import Stylizer, null_context


def pan_sequence(frame_factory, w, h, n, gen):
    """n frames of a static random scene under a 4-pixel-per-frame horizontal pan."""
    base = frame_factory(w + 4 * n, h)
    frames = []
    for i in range(n):
        f = {k: v[:, 4 * i:4 * i + w].contiguous() for k, v in base.items()}
        motion = torch.zeros(h, w, 2, dtype=torch.float16)
        motion[..., 0] = 4.0 if i else 0.0
        f["motion"] = motion
        frames.append(f)
    return frames


def test_frames_through_the_paged_cache_equal_the_state_threaded_by_hand(tiny_model, frame_factory, gen):
    w, h = 48, 32
    frames = pan_sequence(frame_factory, w, h, 5, gen)
    layout = reference_layout(w, h)
    sty = Stylizer(tiny_model, cache=CacheConfig(num_pages=40, page_elems=1000))
    other = sty.open_session(32, 32, reference_layout(32, 32), seed=1)  # a neighbour in the pool
    s = sty.open_session(w, h, layout, seed=7)
    assert sty.pages_in_use(s) > 1  # the state really spans several pages
    got = [sty.step(s, f, FrameParams(steps=2, strength=0.4)) for f in frames]

    cfg = tiny_model.config
    spec = StateSpec(cfg, w, h)
    state = spec.zeros()
    g = torch.Generator().manual_seed(7)
    ctx = null_context(tiny_model, torch.device("cpu"))
    with torch.no_grad():
        for f, out in zip(frames, got):
            noise = torch.randn(state.latent.shape, generator=g)
            rgb, state = stylize_frame(tiny_model, layout, {k: v.unsqueeze(0) for k, v in f.items()}, w, h, ctx, state,
                                       noise, FrameParams(steps=2, strength=0.4))
            state = spec.unflatten(spec.flatten(state))  # in its stored dtypes, as the cache keeps it
            assert torch.allclose(out, rgb[0], atol=1e-6)
    assert not torch.allclose(got[0], got[1])
    sty.close_session(other)


def test_memory_per_session_is_constant(tiny_model, frame_factory, gen):
    sty = Stylizer(tiny_model, cache=CacheConfig(num_pages=40, page_elems=1000))
    frame = frame_factory(32, 32)
    s = sty.open_session(32, 32, reference_layout(32, 32))
    for _ in range(3):
        sty.step(s, frame, FrameParams(steps=1))
    pages3, free3 = sty.cache.pages_of(s.id), sty.cache.blocks.num_free
    for _ in range(297):
        sty.step(s, frame, FrameParams(steps=1))
    assert sty.cache.pages_of(s.id) == pages3 and sty.cache.blocks.num_free == free3


def test_same_seed_same_frames_is_deterministic_and_seed_matters(tiny_model, frame_factory, gen):
    frames = pan_sequence(frame_factory, 32, 24, 3, gen)
    layout = reference_layout(32, 24)

    def run(seed):
        sty = Stylizer(tiny_model)
        s = sty.open_session(32, 24, layout, seed=seed)
        return [sty.step(s, f) for f in frames]

    a, b, c = run(3), run(3), run(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.allclose(a[0], c[0])


def test_slot_bytes_and_channel_tensors_give_the_same_frame(tiny_model, frame_factory, gen):
    w, h = 32, 16
    layout = reference_layout(w, h)
    frame = frame_factory(w, h, layout)
    slot = torch.zeros(layout.slot_bytes(w, h), dtype=torch.uint8)
    for name, view in layout.view(slot, w, h).items():
        view.copy_(frame[name])
    a, b = Stylizer(tiny_model), Stylizer(tiny_model)
    sa, sb = a.open_session(w, h, layout), b.open_session(w, h, layout)
    assert torch.equal(a.step(sa, slot), b.step(sb, frame))


@pytest.mark.parametrize("w, h, words", [
    (64, 4, "height 4 is outside 8..4320"),
    (64.0, 64, "width must be an integer"),
    (64, 8000, "outside"),
])
def test_sizes_that_cannot_be_served_are_refused(tiny_model, w, h, words):
    sty = Stylizer(tiny_model)
    with pytest.raises(ResolutionError, match=words):
        sty.open_session(w, h, reference_layout(64, 64))
    assert sty.cache.used_pages == 0


def test_layout_missing_a_needed_channel_is_refused_at_open(tiny_model):
    sty = Stylizer(tiny_model)
    partial = GBufferLayout((Channel("color", "rgba16f"), Channel("depth", "r32f", offset=65536),
                             Channel("motion", "rg16f", offset=131072)))
    with pytest.raises(LayoutError, match="normals, albedo, roughness, metallic"):
        sty.open_session(64, 64, partial)
    assert sty.cache.used_pages == 0 and sty.cache.sessions == []


def _bad_frames(good):
    nan_depth = dict(good, depth=good["depth"].clone())
    nan_depth["depth"][3, 5, 0] = float("nan")
    inf_color = dict(good, color=good["color"].clone())
    inf_color["color"][0, 0, 1] = float("inf")
    missing = {k: v for k, v in good.items() if k != "albedo"}
    return [
        (nan_depth, InputError, "NaN or infinite values in: depth"),
        (inf_color, InputError, "color"),
        (dict(good, depth=good["depth"].double()), InputError, "torch.float64; the layout says torch.float32"),
        (dict(good, normals=good["normals"][:, :-1]), InputError, "has shape"),
        (missing, InputError, "lacks channel 'albedo'"),
        (dict(good, color=good["color"].tolist()), InputError, "must be a tensor"),
        ("frame", InputError, "a frame is a slot tensor or a mapping"),
        (torch.zeros(100, dtype=torch.uint8), InputError, "holds 100 bytes"),
    ]


def test_each_rejected_frame_leaves_every_session_untouched(tiny_model, frame_factory, gen):
    w, h = 32, 24
    frames = pan_sequence(frame_factory, w, h, 3, gen)
    layout = reference_layout(w, h)
    sty, twin = Stylizer(tiny_model), Stylizer(tiny_model)
    s, neighbour = sty.open_session(w, h, layout, seed=5), sty.open_session(w, h, layout, seed=6)
    t = twin.open_session(w, h, layout, seed=5)
    sty.step(s, frames[0])
    sty.step(neighbour, frames[0])
    twin.step(t, frames[0])
    pool_before = sty.cache.pool.clone()
    for bad, error, words in _bad_frames(frames[1]):
        with pytest.raises(error, match=words):
            sty.step(s, bad)
    for params, words in [(FrameParams(steps=5), "steps"), (FrameParams(strength=1.5), "strength"),
                          (FrameParams(steps=True), "steps")]:
        with pytest.raises(InputError, match=words):
            sty.step(s, frames[1], params)
    assert torch.equal(sty.cache.pool, pool_before)
    # The session goes on exactly as its twin, which saw no bad input.
    for f in frames[1:]:
        assert torch.equal(sty.step(s, f), twin.step(t, f))


def test_closed_unknown_and_evicted_sessions_are_refused(tiny_model, frame_factory):
    class Clock:
        now = 0.0

        def __call__(self):
            return self.now

    clock = Clock()
    layout = reference_layout(32, 32)
    sty = Stylizer(tiny_model, cache=CacheConfig(num_pages=3, page_elems=1 << 14, evict_idle_after_s=30),
                   clock=clock)
    frame = frame_factory(32, 32)
    a = sty.open_session(32, 32, layout)
    b = sty.open_session(32, 32, layout)
    with pytest.raises(CacheFullError):
        sty.open_session(32, 32, layout)  # nobody idle long enough yet
    clock.now = 40.0
    sty.step(b, frame)
    c = sty.open_session(32, 32, layout)  # evicts a, idle for 40 s
    with pytest.raises(SessionEvictedError, match="evicted"):
        sty.step(a, frame)
    sty.step(c, frame)
    sty.close_session(c)
    with pytest.raises(SessionError, match="unknown or closed"):
        sty.step(c, frame)
    with pytest.raises(SessionError):
        sty.close_session(c)
    assert sty.cache.used_pages == 1


def test_any_frame_size_is_served_by_padding_to_the_stride(gen):
    """1080-style sizes: the service pads the planes by repeating the last row and column, runs the
    network at the stride's multiple and crops; the result equals running the padded frame."""
    from streamstyle.model.frame import pad_planes, padded_size
    from streamstyle.tools.bench import random_slot

    from streamstyle.model.config import preset
    from streamstyle.model.network import StreamStyleModel

    torch.manual_seed(0)
    model = StreamStyleModel(preset("tiny")).eval()
    with torch.no_grad():  # the refiner's screen position is the frame's own (37 wide here, 40 there)
        screen = model.refiner.mask_ch + 3
        model.refiner.conv1.weight[:, screen:screen + 2].zero_()
    w, h = 37, 21  # tiny's stride is 8: runs as 40 x 24
    assert padded_size(model.config, w, h) == (40, 24)
    layout, big = reference_layout(w, h), reference_layout(40, 24)
    sty = Stylizer(model)
    s = sty.open_session(w, h, layout, seed=4)
    ref = sty.open_session(40, 24, big, seed=4)
    for _ in range(2):
        slot = random_slot(layout, w, h, "cpu", gen)
        out = sty.step(s, slot, FrameParams(steps=2))
        assert out.shape == (3, h, w) and torch.isfinite(out).all()
        planes = {k: v.unsqueeze(0) for k, v in layout.view(slot, w, h).items()}
        padded = pad_planes(planes, w, h, 40, 24)
        slot_big = torch.zeros(big.slot_bytes(40, 24), dtype=torch.uint8)
        for name, view in big.view(slot_big, 40, 24).items():
            view.copy_(padded[name][0])
        want = sty.step(ref, slot_big, FrameParams(steps=2))
        assert torch.allclose(out, want[:, :h, :w], atol=1e-6)
    with pytest.raises(ResolutionError, match="outside"):
        sty.open_session(5, 40, reference_layout(5, 40))


def test_padding_repeats_the_last_row_and_column_once_per_plane(gen):
    """`pad_planes` against clamped indexing, for every dtype of the reference layout, both margins
    at once; channels that share a plane (roughness, metallic) share one padded tensor."""
    from streamstyle.model.frame import pad_planes
    from streamstyle.tools.bench import random_slot

    w, h, pw, ph = 13, 7, 16, 16
    layout = reference_layout(w, h)
    slot = random_slot(layout, w, h, "cpu", gen)
    planes = {k: v.unsqueeze(0) for k, v in layout.view(slot, w, h).items()}
    padded = pad_planes(planes, w, h, pw, ph)
    rows, cols = torch.arange(ph).clamp(max=h - 1), torch.arange(pw).clamp(max=w - 1)
    for name, x in planes.items():
        want = x[:, rows][:, :, cols]
        assert padded[name].shape == want.shape and padded[name].dtype == x.dtype
        assert torch.equal(padded[name], want), name
    assert padded["roughness"] is padded["metallic"]
    assert pad_planes(planes, w, h, w, h) is planes


@pytest.mark.parametrize("fmt", ["rgba8", "rgba16f"])
def test_step_into_writes_what_step_returns_in_the_engines_format(tiny_model, frame_factory, fmt):
    """Two sessions with the same seed: one stepped to RGB and written by the write-back, the other
    decoded straight into a slot; the bytes agree and the temporal state goes on the same way."""
    from streamstyle.kernels.writeback import output_bytes, write_rgba_reference

    w, h = 40, 24  # 24 is not a multiple of the token stride: padded inside, cropped in the slot
    layout = reference_layout(w, h)
    sty = Stylizer(tiny_model)
    a, b = sty.open_session(w, h, layout, seed=4), sty.open_session(w, h, layout, seed=4)
    n = output_bytes(w, h, fmt)
    for _ in range(3):
        frame = frame_factory(w, h, layout)
        want = torch.full((n + 16,), 7, dtype=torch.uint8)
        write_rgba_reference(sty.step(a, frame), want, fmt)
        got = torch.full((n + 16,), 7, dtype=torch.uint8)
        sty.step_into(b, frame, got, fmt)
        assert torch.equal(got, want)
    with pytest.raises(InputError, match="output format"):
        sty.step_into(b, frame, got, "bgra8")
    with pytest.raises(InputError, match="at least"):
        sty.step_into(b, frame, got[:10], fmt)


def test_a_hard_prompt_switch_resets_the_next_frame_and_a_blend_step_does_not(tiny_model, frame_factory, gen):
    """set_prompt(reset=True) to another prompt: the next frame is the frame a cut would give (the
    history dropped), once; to the same prompt, or without `reset`, nothing is reset. A refused
    frame leaves the reset pending."""
    from streamstyle.model.text import PromptEncoder

    enc = PromptEncoder(max_tokens=16)  # the tiny preset's tokens per prompt
    frames = pan_sequence(frame_factory, 32, 24, 4, gen)
    layout = reference_layout(32, 24)
    sty = Stylizer(tiny_model, enc)

    def run(switch: dict, params_at: dict | None = None, bad_at: int | None = None):
        s = sty.open_session(32, 24, layout, seed=5)
        sty.set_prompt(s, "pencil hatching")
        outs = []
        for i, f in enumerate(frames):
            if i in switch:
                sty.set_prompt(s, *switch[i])
            if i == bad_at:
                bad = dict(f)
                bad["depth"] = torch.full_like(f["depth"], float("nan"))
                with pytest.raises(InputError):
                    sty.step(s, bad)
            outs.append(sty.step(s, f, (params_at or {}).get(i, FrameParams())))
        sty.close_session(s)
        return outs

    cut = run({2: ("neon glow",)}, {2: FrameParams(reset=True)})
    hard = run({2: ("neon glow", True)})
    soft = run({2: ("neon glow",)})
    same = run({2: ("pencil hatching", True)})
    plain = run({})
    refused = run({2: ("neon glow", True)}, bad_at=2)
    assert all(torch.equal(a, b) for a, b in zip(hard, cut))  # the switch's frame is a cut's, and only it
    assert not torch.equal(soft[2], cut[2])  # without reset the history stays (and differs here)
    assert all(torch.equal(a, b) for a, b in zip(same, plain))  # the same prompt again: no reset
    assert all(torch.equal(a, b) for a, b in zip(refused, cut))  # pending through a refused frame


def test_a_refused_prompt_with_reset_changes_nothing(tiny_model, frame_factory, gen):
    """A prompt the encoder refuses (too many blend parts, a zero weight) with `reset`: PromptError,
    and the session keeps its prompt and its history, as if nothing had been sent."""
    from streamstyle.model.errors import PromptError
    from streamstyle.model.text import PromptEncoder

    sty = Stylizer(tiny_model, PromptEncoder(max_tokens=16))
    frames = pan_sequence(frame_factory, 32, 24, 3, gen)
    layout = reference_layout(32, 24)

    def run(bad):
        s = sty.open_session(32, 24, layout, seed=5)
        sty.set_prompt(s, "pencil hatching")
        outs = [sty.step(s, frames[0])]
        for prompt in bad:
            with pytest.raises(PromptError):
                sty.set_prompt(s, prompt, reset=True)
        outs += [sty.step(s, f) for f in frames[1:]]
        sty.close_session(s)
        return outs

    plain = run([])
    refused = run([[("neon glow", 1.0)] * (tiny_model.config.max_prompts + 1), [("neon glow", 0.0)]])
    assert all(torch.equal(a, b) for a, b in zip(plain, refused))
