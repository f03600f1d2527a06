"""The refiner's full-resolution history (model/frame.py: frame_history, model/refiner.py): it
follows the camera, a cut or reset drops it, disoccluded pixels never take it, and it lives in the
session's pages."""


import pytest
import torch

from streamstyle.model.cache import CacheConfig
from streamstyle.model.frame import FrameParams, frame_history, prepare_frame, start_frame
from streamstyle.model.layout import reference_layout
from streamstyle.model.state import StateSpec
from streamstyle.model.stylizer import Stylizer

W, H = 48, 32


def batch(planes):
    return {k: v.unsqueeze(0) for k, v in planes.items()}


def state_after(tiny_model, layout, planes, seed=3):
    """The session state after one frame of `planes`, read back from the paged cache."""
    sty = Stylizer(tiny_model)
    s = sty.open_session(W, H, layout, seed=seed)
    sty.step(s, planes, FrameParams(steps=1))
    spec = StateSpec(tiny_model.config, W, H)
    return spec.unflatten(sty.cache.read(s.id).clone())


def second_frames(tiny_model, layout, first, second, edit, params=None, fills=(0.0, 1.0)):
    """For each fill: a fresh session steps `first`, then `edit(state, fill)` changes its stored
    state (views into the pages' copy, written back), then it steps `second` from the same noise.
    Returns the second frames."""
    cfg = tiny_model.config
    sty = Stylizer(tiny_model)
    outs = []
    for fill in fills:
        s = sty.open_session(W, H, layout, seed=1)
        sty.step(s, first, FrameParams(steps=1))
        flat = sty.cache.read(s.id)
        edit(StateSpec(cfg, W, H).unflatten(flat), fill)
        sty.cache.write(s.id, flat)
        sty.reseed(s, 9)
        outs.append(sty.step(s, second, params or FrameParams(steps=1)))
    return outs


def test_a_static_camera_keeps_the_whole_history(tiny_model, frame_factory):
    layout = reference_layout(W, H)
    planes = frame_factory(W, H)
    state = state_after(tiny_model, layout, planes)
    inputs = prepare_frame(tiny_model.config, layout, batch(planes), W, H)
    history, mask = frame_history(tiny_model.config, inputs, state)
    assert bool((mask == 1).all())
    assert torch.allclose(history, state.image, atol=1e-6)  # zero motion: the previous frame itself


def test_the_history_follows_the_camera(tiny_model, frame_factory, gen):
    """A pan of 2 pixels: the history at x is the previous frame at x + 2; the pixels whose source
    lies outside the previous frame are masked."""
    layout = reference_layout(W, H)
    depth = torch.full((H, W, 1), 5.0)
    first = frame_factory(W, H, depth=depth)
    state = state_after(tiny_model, layout, first)
    motion = torch.zeros(H, W, 2, dtype=torch.float16)
    motion[..., 0] = 2.0  # current -> previous offset, pixels
    moved = frame_factory(W, H, depth=depth, motion=motion)
    inputs = prepare_frame(tiny_model.config, layout, batch(moved), W, H)
    history, mask = frame_history(tiny_model.config, inputs, state)
    assert torch.allclose(history[..., :W - 2], state.image[..., 2:], atol=1e-5)
    assert bool((mask[..., :W - 2] == 1).all()) and bool((mask[..., W - 2:] == 0).all())


def test_a_cut_drops_the_history(tiny_model, frame_factory):
    layout = reference_layout(W, H)
    planes = frame_factory(W, H)
    state = state_after(tiny_model, layout, planes)
    cfg = tiny_model.config
    inputs = prepare_frame(cfg, layout, batch(planes), W, H)
    noise = torch.zeros_like(state.latent)
    for reset in (True, torch.tensor([1.0])):
        kept = start_frame(cfg, inputs, state, noise, 0.5, reset).state
        _, mask = frame_history(cfg, inputs, kept)
        assert bool((mask == 0).all())
    # ... and the frame after a reset ignores whatever the history holds.
    outs = second_frames(tiny_model, layout, planes, planes, lambda st, fill: st.image.fill_(fill),
                         FrameParams(steps=1, reset=True))
    assert torch.equal(outs[0], outs[1])


def test_disoccluded_pixels_never_take_history(tiny_model, frame_factory):
    """A block whose depth jumps (something new in front) is masked out; the frame inside it is the
    same whatever the previous frame held there (the refiner's two 3x3 passes see two pixels
    around, so the block's interior is compared)."""
    cfg = tiny_model.config
    layout = reference_layout(W, H)
    depth = torch.full((H, W, 1), 10.0)
    planes = frame_factory(W, H, depth=depth)
    now = dict(planes, depth=depth.clone())
    now["depth"][8:24, 16:40] = 2.0
    inputs = prepare_frame(cfg, layout, batch(now), W, H)

    def edit(st, fill):
        _, mask = frame_history(cfg, inputs, st)
        assert bool((mask[..., 8:24, 16:40] == 0).all()) and bool((mask[..., :8, :] == 1).all())
        st.image[..., 8:24, 16:40] = fill  # what the previous frame held where the new object is

    outs = second_frames(tiny_model, layout, planes, now, edit)
    inner = (slice(None), slice(10, 22), slice(18, 38))
    assert torch.equal(outs[0][inner], outs[1][inner])


def test_valid_history_reaches_the_frame(tiny_model, frame_factory):
    """Where history is valid the refiner blends it in: changing it changes the frame."""
    layout = reference_layout(W, H)
    planes = frame_factory(W, H)
    outs = second_frames(tiny_model, layout, planes, planes, lambda st, fill: st.image.fill_(fill))
    assert (outs[0] - outs[1]).abs().mean() > 1e-3


def test_the_history_lives_in_the_sessions_pages_and_goes_back_at_close(tiny_model, frame_factory):
    cfg = tiny_model.config
    spec = StateSpec(cfg, W, H)
    assert spec.shapes()["image"] == (1, 3, H, W) and spec.shapes()["image_depth"] == (1, 1, H, W)
    cache = CacheConfig(num_pages=64, page_elems=1024)
    sty = Stylizer(tiny_model, cache=cache)
    free = sty.cache.blocks.num_free
    s = sty.open_session(W, H, reference_layout(W, H))
    assert sty.pages_in_use(s) == cache.pages_for(spec.numel)
    planes = frame_factory(W, H)
    for _ in range(3):
        sty.step(s, planes, FrameParams(steps=1))
    st = spec.unflatten(sty.cache.read(s.id))
    assert float(st.image.abs().sum()) > 0  # the frame went into the pages
    sty.close_session(s)
    assert sty.cache.blocks.num_free == free


def test_shifting_the_history_confidence_keeps_more_history_only_where_it_is_valid(tiny_model, gen):
    """`Refiner.shift_history_confidence` (export --history-shift): with the logit raised, pixels
    whose mask is 1 move towards their history; pixels whose mask is 0 stay exactly as they were."""
    import copy

    r = copy.deepcopy(tiny_model.refiner)
    with torch.no_grad():  # no correction (the frame inside [0, 1], unclamped) and the logit its bias alone,
        r.out.weight.zero_()  # so the blend is known: sigmoid(-2), then sigmoid(0)
        r.out.bias.zero_()
        r.out.bias[3] = -2.0
    b, hh, ww = 1, 16, 24
    guide_ch = r.hist_ch - r.guide_ch
    latent = torch.rand(b, 3, hh // r.stride, ww // r.stride, generator=gen) * 2 - 1
    guide = torch.randn(b, guide_ch, hh, ww, generator=gen)
    history = torch.rand(b, 3, hh, ww, generator=gen)
    mask = torch.zeros(b, 1, hh, ww)
    mask[..., :, : ww // 2] = 1.0
    pooled = torch.randn(1, tiny_model.config.text_dim, generator=gen)
    with torch.no_grad():
        before = r(latent, guide, history, mask, None, None, pooled, ww, hh)
        shifted = copy.deepcopy(r)
        shifted.shift_history_confidence(2.0)
        after = shifted(latent, guide, history, mask, None, None, pooled, ww, hh)
    left, right = (slice(None), slice(None), slice(None), slice(0, ww // 2)), \
        (slice(None), slice(None), slice(None), slice(ww // 2, None))
    assert torch.equal(after[right], before[right])
    keep_before, keep_after = torch.sigmoid(torch.tensor(-2.0)), torch.sigmoid(torch.tensor(0.0))
    want = history[left] + (1 - keep_after) / (1 - keep_before) * (before[left] - history[left])
    # frame = fresh + keep * (history - fresh)
    assert torch.allclose(after[left], want, atol=1e-5)
    # 0.5 / 0.88 as far from the history as before
    assert (after[left] - history[left]).abs().mean() < 0.6 * (before[left] - history[left]).abs().mean()
    for bad in (float("nan"), float("inf"), "2", True):
        with pytest.raises(ValueError, match="finite number"):
            shifted.shift_history_confidence(bad)
    assert shifted.out.bias[3] == 0.0  # refused shifts leave the weights as they were


def test_export_sets_the_history_noise_in_the_config_and_refuses_a_bad_share(tiny_model, tmp_path, capsys):
    """`export --history-noise 0` writes it into config.json and the weights' own metadata (the
    weights unchanged); a share outside [0, 1] is refused with exit 2 and writes nothing."""
    from safetensors import safe_open

    from streamstyle.model.weights import load_weights, save_weights
    from streamstyle.tools.cli import main

    src = save_weights(tiny_model, tmp_path / "src")
    assert main(["export", "--weights", str(src), "--out", str(tmp_path / "out"), "--dtype", "fp32",
                 "--history-noise", "0"]) == 0
    assert "history noise 0" in capsys.readouterr().out
    out = load_weights(tmp_path / "out")
    assert out.config.history_noise == 0.0 and load_weights(src).config.history_noise == 1.0
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        assert '"history_noise": 0.0' in f.metadata()["streamstyle_config"]
    for name, value in tiny_model.state_dict().items():
        assert torch.equal(out.state_dict()[name], value), name
    assert main(["export", "--weights", str(src), "--out", str(tmp_path / "bad"), "--history-noise", "1.5"]) == 2
    assert "history_noise must lie in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
