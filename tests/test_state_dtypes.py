"""The state's stored dtypes: the full-resolution history frame in bf16, two values to a float32
word of the paged cache, and what that rounding does to the frames (against a float32 state)."""

import dataclasses

import pytest
import torch

from streamstyle.model import state as state_module
from streamstyle.model.config import preset
from streamstyle.model.frame import FrameParams
from streamstyle.model.layout import reference_layout
from streamstyle.model.state import StateSpec
from streamstyle.model.stylizer import Stylizer


def test_the_flat_state_holds_the_frame_in_bf16_words(gen):
    cfg = preset("tiny")
    spec = StateSpec(cfg, 40, 24)
    shapes = spec.shapes()
    plain = sum(torch.Size(s).numel() for s in shapes.values())
    image = torch.Size(shapes["image"]).numel()
    assert spec.numel == plain - image // 2  # the frame takes half its float32 words
    state = dataclasses.replace(spec.zeros(), **{k: torch.rand(s, generator=gen) for k, s in shapes.items()})
    flat = spec.flatten(state)
    assert flat.dtype == torch.float32 and flat.shape == (spec.numel,)
    back = spec.unflatten(flat)
    assert back.image.dtype == torch.bfloat16 and back.image_depth.dtype == torch.float32
    assert torch.equal(back.image, state.image.bfloat16())  # rounded to nearest, nothing else
    for f in dataclasses.fields(state):
        if f.name != "image":
            assert torch.equal(getattr(back, f.name), getattr(state, f.name)), f.name
    back.image[0, 1, 2, 3] = 0.25  # views: writing the state writes the flat vector
    assert spec.unflatten(flat).image[0, 1, 2, 3] == 0.25
    assert torch.equal(spec.flatten(back), flat)  # a stored state flattens to the same words
    with pytest.raises(ValueError, match="float32"):
        spec.unflatten(flat[:-1])
    with pytest.raises(ValueError, match="float32"):
        spec.unflatten(flat.double())


def test_an_odd_count_of_bf16_values_is_padded_to_a_whole_word(gen, monkeypatch):
    cfg = preset("tiny")
    monkeypatch.setitem(state_module.STORED_DTYPES, "valid", torch.bfloat16)  # [1]: one value, half a word
    spec = StateSpec(cfg, 8, 8)
    state = dataclasses.replace(spec.zeros(), valid=torch.tensor([1.0]), image=torch.rand(1, 3, 8, 8, generator=gen))
    back = spec.unflatten(spec.flatten(state))
    assert back.valid.shape == (1,) and back.valid.item() == 1.0
    assert torch.equal(back.image, state.image.bfloat16())


def run_session(model, frames, w, h, stored: dict):
    """A session's frames with the state stored in `stored`'s dtypes (an empty dict: all float32)."""
    saved = dict(state_module.STORED_DTYPES)
    state_module.STORED_DTYPES.clear()
    state_module.STORED_DTYPES.update(stored)
    try:
        sty = Stylizer(model)
        s = sty.open_session(w, h, reference_layout(w, h), seed=2)
        rgb = [sty.step(s, f, FrameParams(steps=2, strength=0.5)) for f in frames]
        return rgb, StateSpec(model.config, w, h).unflatten(sty.cache.read(s.id)).image.float()
    finally:
        state_module.STORED_DTYPES.clear()
        state_module.STORED_DTYPES.update(saved)


def test_a_bf16_history_changes_the_shipped_models_frames_less_than_its_own_rounding(frame_factory, gen):
    """The shipped model on 8 frames of a pan with fractional motion (the warp interpolates the
    stored history): the frames of a session storing its history in bf16 differ from those of one
    storing float32 by under two steps of an 8-bit output at the worst pixel and a fraction of one on
    average, and the difference does not double over the frames. A history kept with confidence k
    carries each frame's rounding (2^-9 at most in [0, 1]) into the next frames. Measured (max, mean
    over the 7 frames with history): stage 4 (its blend over valid history 0.57), 0.0023, 0.00048;
    stage 5 (2026-12-02), 0.0051-0.0058, 0.0010; stage 6 (2026-12-03, blend 0.995 on this pan, 0.83
    for stage 5 measured the same way; 0.15-0.41 on a held-out scene), 0.0066, 0.00135, its mean 1.34x its first frame's. Over 32
    frames stage 6's mean levels off at 0.0022 (stage 5's at 0.0010) and its worst pixel, on the
    bottom row where the warp reads at the frame's border, reaches 0.025. The bounds allow stage 6
    with a margin (max 2 x 2^-8, mean 2^-9). A float32 store would not remove this on a GPU: there
    the refiner reads the history from its bf16 input features (model/state.py)."""
    from streamstyle.model.weights import load_weights, shipped_weights

    model = load_weights(shipped_weights()).eval()
    w, h, n, speed = 96, 64, 8, 3
    layout = reference_layout(w + speed * n, h)
    base = frame_factory(w + speed * n, h, layout)
    frames = []
    for i in range(n):
        f = {k: v[:, speed * i:speed * i + w].contiguous() for k, v in base.items()}
        motion = torch.zeros(h, w, 2, dtype=torch.float16)
        motion[..., 0], motion[..., 1] = (2.6, 0.3) if i else (0.0, 0.0)
        f["motion"] = motion
        frames.append(f)
    a, hist32 = run_session(model, frames, w, h, {})
    b, hist16 = run_session(model, frames, w, h, {"image": torch.bfloat16})
    assert torch.equal(a[0], b[0])  # no history yet: the same frame
    assert torch.equal(hist32[0], a[-1])  # the history is the last frame: as it was, or
    assert torch.equal(hist16[0], b[-1].bfloat16().float())  # rounded to nearest bf16
    assert not torch.equal(hist16[0], b[-1])
    diffs = [(x - y).abs() for x, y in zip(a[1:], b[1:])]
    for d in diffs:  # under two 8-bit output steps (1/255) at the worst pixel, half of one on average
        assert d.max() <= 2 * 2 ** -8 and d.mean() <= 2 ** -9
    assert diffs[-1].mean() <= 2 * diffs[0].mean()  # no drift over frames
    assert max(float(d.max()) for d in diffs) > 0  # the rounding did reach the frames
