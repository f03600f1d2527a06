"""The Triton G-buffer pack kernel against its reference, reading a real slot's strided planes in
the engine's formats (half floats, 8-bit, float depth), and the whole per-frame step with every
kernel on against the references. Interpreter on the CPU."""

import pytest
import torch

pytest.importorskip("triton")

from streamstyle.kernels import backend  # noqa: E402
from streamstyle.kernels.gbuffer_pack import PackKind, PackSpec, pack_gbuffers_reference  # noqa: E402
from streamstyle.kernels.gbuffer_pack.triton_kernel import pack_gbuffers_triton  # noqa: E402
from streamstyle.model.config import preset  # noqa: E402
from streamstyle.model.frame import FrameParams  # noqa: E402
from streamstyle.model.layout import pack_specs, reference_layout  # noqa: E402
from streamstyle.model.network import StreamStyleModel  # noqa: E402
from streamstyle.model.stylizer import Stylizer  # noqa: E402
from streamstyle.tools.bench import random_slot  # noqa: E402


def slot_planes(w, h, gen, batch=1):
    layout = reference_layout(w, h)
    cfg = preset("default")
    names = list(cfg.cond_channels) + [n for n in cfg.guide_channels if n not in cfg.cond_channels]
    slots = [random_slot(layout, w, h, "cpu", gen) for _ in range(batch)]
    views = [layout.view(s, w, h) for s in slots]
    planes = [torch.stack([v[n] for v in views]) if batch > 1 else views[0][n].unsqueeze(0) for n in names]
    return planes, pack_specs(layout, names)


@pytest.mark.parametrize("w, h, down, batch", [(36, 20, 4, 1), (16, 48, 2, 2), (8, 8, 1, 1), (64, 32, 8, 1)])
def test_kernel_matches_reference_on_slot_planes(gen, w, h, down, batch):
    planes, specs = slot_planes(w, h, gen, batch)
    # as engines write them: views into one slot, mixed formats, two channels sharing one plane
    assert batch > 1 or len({p.data_ptr() for p in planes}) < len(planes)
    assert len({p.dtype for p in planes}) == 3
    c = sum(s.count for s in specs)
    poisoned = (torch.full((batch, c, h, w), float("nan")), torch.full((batch, c, h // down, w // down), float("nan")))
    full, low = pack_gbuffers_triton(planes, specs, down, outputs=poisoned)
    rf, rl = pack_gbuffers_reference(planes, specs, down)
    assert not torch.isnan(full).any() and not torch.isnan(low).any()
    assert torch.allclose(full, rf, atol=2e-6) and torch.allclose(low, rl, atol=2e-6)


def test_every_encoding_and_out_of_range_values(gen):
    h, w = 8, 12
    hdr = (torch.randn(1, h, w, 4, generator=gen) * 10).half()  # negative and large: clamps
    depth = torch.cat([torch.zeros(1, h, w // 2, 1), torch.full((1, h, w // 2, 1), 1e6)], 2)  # below near, past far
    unorm = torch.randint(0, 256, (1, h, w, 4), generator=gen, dtype=torch.int32).to(torch.uint8)
    specs = [PackSpec(0, 3, PackKind.TONEMAP, 1.5, 0.0), PackSpec(0, 1, PackKind.LOG_DEPTH, 0.1, 500.0),
             PackSpec(1, 3, PackKind.AFFINE, 2 / 255, -1.0)]
    full, low = pack_gbuffers_triton([hdr, depth, unorm], specs, 4)
    rf, rl = pack_gbuffers_reference([hdr, depth, unorm], specs, 4)
    assert torch.allclose(full, rf, atol=2e-6) and torch.allclose(low, rl, atol=2e-6)
    assert full.abs().max() <= 1.0


def test_the_frame_with_every_kernel_equals_the_references(gen):
    """The per-frame step (pack, warp, linear attention, adaLN glue, Mix-FFN gate, decoder: every
    kernel behind the switch) with backend 'triton' against 'reference', over three frames so warp
    and state are exercised."""
    torch.manual_seed(0)
    model = StreamStyleModel(preset("tiny")).eval()
    w, h = 32, 24
    layout = reference_layout(w, h)
    slots = [random_slot(layout, w, h, "cpu", gen) for _ in range(3)]
    outs = {}
    for name in ("reference", "triton"):
        backend.set_backend(name)
        try:
            sty = Stylizer(model)
            s = sty.open_session(w, h, layout, seed=5)
            outs[name] = [sty.step(s, slot, FrameParams(steps=2, strength=0.6)) for slot in slots]
        finally:
            backend.set_backend("auto")
    first, *later = zip(outs["reference"], outs["triton"])
    assert torch.allclose(*first, atol=1e-4)
    # Later frames read the history, which the state keeps in bf16: where the two backends' float32
    # frames (1e-7 apart) fall on either side of a bf16 rounding boundary, the stored history
    # differs by one bf16 step, and so the next frame by up to that step times the history's weight.
    for a, b in later:
        d = (a - b).abs()
        assert d.max() <= 2.0 ** -9 and (d > 1e-4).float().mean() < 0.05, (d.max(), (d > 1e-4).float().mean())


@pytest.mark.gpu
def test_kernel_matches_reference_on_the_gpu(gen):
    planes, specs = slot_planes(1280, 720, gen)
    planes = [p.cuda() for p in planes]
    full, low = pack_gbuffers_triton(planes, specs, 4)
    rf, rl = pack_gbuffers_reference(planes, specs, 4)
    # the GPU's log, exp and division are approximate (a few ulp); 8-bit inputs step by 2/255
    assert torch.allclose(full, rf, atol=1e-4) and torch.allclose(low, rl, atol=1e-4)
