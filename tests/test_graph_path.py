"""The graphed step (`FrameGraph`: the session's pages gathered and scattered inside the replay,
one graph shared by every session of a shape) against the eager step, frame by frame.

On the CPU the graph's body runs uncaptured (`FrameGraph(capture=False)`), which checks everything
the graph adds (its buffers, the page-table binding, the guarded write-back, the slot's guarded
copy) but not the capture itself; on a GPU (`gpu` marker) the same tests capture and replay.
"""

import pytest
import torch

from streamstyle.model.cache import CacheConfig
from streamstyle.model.config import preset
from streamstyle.model.errors import InputError
from streamstyle.model.frame import FrameParams, padded_size
from streamstyle.model.layout import reference_layout
from streamstyle.model.network import StreamStyleModel
from streamstyle.model.state import StateSpec
from streamstyle.model.stylizer import Stylizer

from .conftest import random_prompt_table

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def model_on(tiny_model, device):
    if device == "cpu":
        return tiny_model
    model = StreamStyleModel(preset("tiny")).to(device).eval()
    model.load_state_dict(tiny_model.state_dict())
    return model


def graphed(model, device, **kw) -> Stylizer:
    sty = Stylizer(model, device=device, cuda_graphs=True, **kw)
    sty.cuda_graphs = True  # on the CPU: the graph's body, uncaptured
    return sty


def slot_of(layout, w, h, planes, device):
    slot = torch.zeros(layout.slot_bytes(w, h), dtype=torch.uint8)
    for name, view in layout.view(slot, w, h).items():
        view.copy_(planes[name])
    return slot.to(device)


def moving_frames(frame_factory, gen, w, h, n, device):
    """n slots of random scenes with small fractional motion (the warp interpolates)."""
    layout = reference_layout(w, h)
    out = []
    for _ in range(n):
        motion = ((torch.rand(h, w, 2, generator=gen) - 0.5) * 3).to(torch.float16)
        out.append(slot_of(layout, w, h, frame_factory(w, h, layout, motion=motion), device))
    return layout, out


def same_frame(a, b, device):
    """The CPU runs the same ops in the same order: bit for bit. On a GPU the graph and the eager
    step may round float32 differently; where that straddles a bf16 rounding boundary of the
    stored history, the next frame differs by up to one bf16 step (2^-8) at that pixel."""
    if device == "cpu":
        assert torch.equal(a, b), (a.float() - b.float()).abs().max()
        return
    d = (a.float() - b.float()).abs()
    assert d.max() <= 1e-4 + 2 ** -8 and (d > 1e-4).float().mean() <= 0.01, d.max()


def same_state(sty_a, sid_a, sty_b, sid_b, spec, device):
    """Two sessions' stored states: the same words on the CPU; on a GPU field by field (bf16
    words compared as bf16 values, not as the float32 they are stored in)."""
    fa, fb = sty_a.cache.read(sid_a), sty_b.cache.read(sid_b)
    if device == "cpu":
        assert torch.equal(fa, fb)
        return
    ta, tb = spec.unflatten(fa), spec.unflatten(fb)
    for name in ("kv", "ks", "latent", "depth", "valid", "image_depth"):
        assert torch.allclose(getattr(ta, name), getattr(tb, name), rtol=1e-4, atol=1e-4), name
    same_frame(ta.image, tb.image, device)


@pytest.mark.parametrize("device", DEVICES)
def test_sessions_of_two_sizes_share_graphs_and_match_eager(tiny_model, frame_factory, gen, device):
    """Two sessions of one shape share its graph (the page table is rebound every frame, as they
    alternate) and a third of another size (padded: 61x43 runs as 64x48) has its own; each frame
    and each session's stored state equal its eager twin's."""
    model = model_on(tiny_model, device)
    sizes = [(64, 48), (64, 48), (61, 43)]
    g, e = graphed(model, device), Stylizer(model, device=device)
    pairs = [(g.open_session(w, h, reference_layout(w, h), seed=7 + i), e.open_session(w, h, reference_layout(w, h), seed=7 + i))
             for i, (w, h) in enumerate(sizes)]
    frames = [moving_frames(frame_factory, gen, w, h, 4, device)[1] for w, h in sizes]
    outs = []
    for f in range(4):
        for i, ((sg, se), (w, h)) in enumerate(zip(pairs, sizes)):
            params = FrameParams(steps=2, strength=0.3 + 0.1 * f, reset=(f == 2 and i == 0))
            a, b = g.step(sg, frames[i][f], params), e.step(se, frames[i][f], params)
            assert a.shape == (3, h, w)
            same_frame(a, b, device)
            same_state(g, sg.id, e, se.id, StateSpec(model.config, *padded_size(model.config, w, h)), device)
            outs.append(a)
    assert len(g._graphs) == 2  # one per shape
    assert (outs[-1] - outs[-4]).abs().max() > 0.01  # the sessions' frames differ: the comparison has teeth


@pytest.mark.parametrize("device", DEVICES)
def test_the_deterministic_start_and_a_deeper_refiner_go_through_the_graph(tiny_model, frame_factory, gen, device):
    """`history_noise` 0 (a `torch.where` in the sampler's start), `refiner_depth` 1 (a residual
    pass, trained away from the identity) and object colours (`id_colours` 4, their style matrix
    away from zero: the per-frame table and the composite's look-up) inside the captured frame:
    every frame equals the eager step's, and differs from the same model's without them (so the
    comparison sees them)."""
    import dataclasses

    config = dataclasses.replace(preset("tiny"), history_noise=0.0, refiner_depth=1, id_colours=4).validate()
    model = StreamStyleModel(config).eval()
    model.load_state_dict(tiny_model.state_dict(), strict=False)  # all but the new pass and the colours
    with torch.no_grad():
        for p in [*model.refiner.middle.parameters(), *model.refiner.style_colours.parameters()]:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    model = model.to(device)
    plain = model_on(tiny_model, device)
    w, h = 64, 48
    layout, frames = moving_frames(frame_factory, gen, w, h, 3, device)
    g, e, p = graphed(model, device), Stylizer(model, device=device), Stylizer(plain, device=device)
    sg, se, sp = (s.open_session(w, h, layout, seed=3) for s in (g, e, p))
    for f in range(3):
        params = FrameParams(steps=2, strength=0.5)
        a, b, c = g.step(sg, frames[f], params), e.step(se, frames[f], params), p.step(sp, frames[f], params)
        same_frame(a, b, device)
        assert (a.float() - c.float()).abs().max() > 0.01


@pytest.mark.parametrize("device", DEVICES)
def test_a_hard_prompt_switch_resets_through_the_graph(tiny_model, frame_factory, gen, device, tmp_path):
    """`set_prompt(reset=True)` on a graphed session: the switch's frame is the graph's frame with
    `reset`, and the eager step's with the same switch; without `reset` the history stays."""
    model = model_on(tiny_model, device)
    enc = random_prompt_table(preset("tiny"), tmp_path, gen, device=device)
    w, h = 64, 48
    layout, frames = moving_frames(frame_factory, gen, w, h, 4, device)

    def run(sty, reset_switch: bool, cut: bool):
        s = sty.open_session(w, h, layout, seed=9)
        sty.set_prompt(s, "a")
        outs = []
        for f in range(4):
            if f == 2:
                sty.set_prompt(s, "b", reset=reset_switch)
            outs.append(sty.step(s, frames[f], FrameParams(steps=2, strength=0.5, reset=cut and f == 2)))
        sty.close_session(s)
        return outs

    hard = run(graphed(model, device, prompts=enc), True, False)
    cut = run(graphed(model, device, prompts=enc), False, True)
    eager = run(Stylizer(model, enc, device=device), True, False)
    soft = run(graphed(model, device, prompts=enc), False, False)
    for a, b, c in zip(hard, cut, eager):
        same_frame(a, b, device)
        same_frame(a, c, device)
    assert (hard[2].float() - soft[2].float()).abs().max() > 0.01


@pytest.mark.parametrize("device", DEVICES)
def test_a_closed_sessions_pages_are_reused_by_the_next_through_the_same_graph(tiny_model, frame_factory, gen, device):
    """A cache with room for two sessions: the first closes, the next takes its freed pages and
    the shared graph. The newcomer's first frame is a first frame (its pages were zeroed at open,
    nothing of the closed session's history leaks through the graph's old binding), and the
    session that stayed goes on as its eager twin does."""
    model = model_on(tiny_model, device)
    w, h = 64, 48
    spec = StateSpec(model.config, w, h)
    cache = CacheConfig(num_pages=2 * CacheConfig(page_elems=4096).pages_for(spec.numel) + 1, page_elems=4096)
    g, e = graphed(model, device, cache=cache), Stylizer(model, device=device, cache=cache)
    layout, frames = moving_frames(frame_factory, gen, w, h, 4, device)
    a, keep = g.open_session(w, h, layout, seed=1), g.open_session(w, h, layout, seed=2)
    twin = e.open_session(w, h, layout, seed=2)
    for f in range(2):
        g.step(a, frames[f])
        same_frame(g.step(keep, frames[f]), e.step(twin, frames[f]), device)
    pages = set(g.cache.pages_of(a.id))
    g.close_session(a)
    assert len(g._graphs) == 1  # a session of the shape is still open: the graph stays
    new = g.open_session(w, h, layout, seed=3)
    assert set(g.cache.pages_of(new.id)) == pages  # the freed pages, reused
    fresh = Stylizer(model, device=device)
    ref = fresh.open_session(w, h, layout, seed=3)
    same_frame(g.step(new, frames[2]), fresh.step(ref, frames[2]), device)
    same_frame(g.step(keep, frames[2]), e.step(twin, frames[2]), device)
    same_frame(g.step(new, frames[3]), fresh.step(ref, frames[3]), device)
    same_state(g, new.id, fresh, ref.id, spec, device)


@pytest.mark.parametrize("device", DEVICES)
def test_a_refused_frame_leaves_the_slot_and_the_state_as_they_were(tiny_model, frame_factory, gen, device):
    """A slot with an infinity, through the graph: refused by name, the engine's output slot and
    the session's pages (and its neighbour's) byte for byte as before; the next good frame is the
    one a session that never saw the bad frame gives."""
    model = model_on(tiny_model, device)
    w, h = 64, 48
    layout, frames = moving_frames(frame_factory, gen, w, h, 3, device)
    a, b = graphed(model, device), graphed(model, device)
    sa, other, sb = a.open_session(w, h, layout, seed=5), a.open_session(w, h, layout, seed=6), b.open_session(w, h, layout, seed=5)
    n = w * h * 4
    for sty, s in ((a, sa), (a, other), (b, sb)):
        sty.step_into(s, frames[0], torch.zeros(n, dtype=torch.uint8, device=device), "rgba8")
    before, before_other = a.cache.read(sa.id).clone(), a.cache.read(other.id).clone()
    bad = frames[1].clone()
    layout.view(bad, w, h)["motion"][7, 9, 0] = float("inf")
    out = torch.full((n + 4,), 0xAB, dtype=torch.uint8, device=device)
    with pytest.raises(InputError, match="NaN or infinite values in: motion"):
        a.step_into(sa, bad, out, "rgba8")
    assert bool((out == 0xAB).all())
    assert torch.equal(a.cache.read(sa.id), before) and torch.equal(a.cache.read(other.id), before_other)
    a.reseed(sa, 11)
    b.reseed(sb, 11)
    oa, ob = (torch.zeros(n + 4, dtype=torch.uint8, device=device) for _ in range(2))
    a.step_into(sa, frames[2], oa, "rgba8")
    b.step_into(sb, frames[2], ob, "rgba8")
    assert torch.equal(oa, ob)
    assert not bool((oa[:n] == 0).all()) and not oa[n:].any()  # written, and nothing past the frame
    assert not torch.equal(a.cache.read(sa.id), before)  # a good frame does write the pages


def test_a_graph_refuses_a_page_table_of_another_size(tiny_model):
    from streamstyle.model.graph import FrameGraph

    w, h = 64, 48
    sty = Stylizer(tiny_model)
    graph = FrameGraph(tiny_model, reference_layout(w, h), w, h, 1, torch.device("cpu"), sty.cache.pool)
    with pytest.raises(ValueError, match="page table"):
        graph.bind(torch.zeros(graph.pages.numel() + 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        FrameGraph(tiny_model, reference_layout(w, h), w, h, 1, torch.device("cpu"), sty.cache.pool, capture=True)
