"""FP8 block GEMMs: quantization error bounds, the swapped model against float32, the service
dtype, and (GPU) torch._scaled_mm against the emulated product."""

import pytest
import torch

from streamstyle.model.config import preset
from streamstyle.model.fp8 import FP8_MAX, Fp8Linear, quantize_rows, to_fp8
from streamstyle.model.frame import FrameParams
from streamstyle.model.layout import reference_layout
from streamstyle.model.network import StreamStyleModel
from streamstyle.model.stylizer import Stylizer
from streamstyle.tools.bench import random_slot


def test_row_quantization_keeps_e4m3_precision(gen):
    x = torch.randn(37, 64, generator=gen) * torch.logspace(-3, 3, 37).view(-1, 1)  # rows of very different scale
    q, scale = quantize_rows(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (37, 1)
    back = q.float() * scale
    assert (back.abs().amax(dim=1) <= x.abs().amax(dim=1) * 1.0001).all()
    rel = (back - x).abs() / x.abs().amax(dim=1, keepdim=True)
    assert rel.max() <= 2 ** -4 + 1e-6  # 3 mantissa bits, relative to each row's range
    assert q.float().abs().max() <= FP8_MAX


def test_fp8_linear_is_the_product_of_the_quantized_operands(gen):
    lin = torch.nn.Linear(48, 32)
    x = torch.randn(5, 7, 48, generator=gen)
    f = Fp8Linear(lin)
    qa, sa = quantize_rows(x.reshape(-1, 48))
    want = (qa.float() * sa) @ (f.weight_fp8.float() * f.weight_scale.t()).t() + lin.bias
    assert torch.allclose(f(x), want.view(5, 7, 32), atol=1e-5)
    exact = lin(x)
    assert ((f(x) - exact).norm() / exact.norm()) < 0.05


def test_activations_reach_the_product_row_major(gen):
    """The Mix-FFN's gate comes from transposed views; the FP8 product (cuBLASLt) needs a row-major
    A, so the layer must not pass a column-major view through."""
    lin = torch.nn.Linear(32, 16)
    f = Fp8Linear(lin)
    seen = []
    original = quantize_rows

    x = torch.randn(1, 32, 24, generator=gen).transpose(1, 2)  # [1, 24, 32], column-major rows
    assert not x.reshape(-1, 32).is_contiguous()
    import streamstyle.model.fp8 as fp8

    fp8.quantize_rows = lambda a: (seen.append(a.is_contiguous()), original(a))[1]
    try:
        out = f(x)
    finally:
        fp8.quantize_rows = original
    assert seen == [True]
    assert torch.allclose(out, f(x.contiguous()), atol=1e-6)


def test_a_swapped_model_stays_near_float32(gen):
    torch.manual_seed(0)
    model = StreamStyleModel(preset("tiny")).eval()
    w, h = 32, 32
    layout = reference_layout(w, h)
    slots = [random_slot(layout, w, h, "cpu", gen) for _ in range(2)]
    ref = Stylizer(model)
    fp8 = StreamStyleModel(preset("tiny"))
    fp8.load_state_dict(model.state_dict())
    fp8 = to_fp8(fp8.eval())
    swapped = [m for m in fp8.modules() if isinstance(m, Fp8Linear)]
    assert len(swapped) == 6 * preset("tiny").depth
    fast = Stylizer(fp8)
    sr, sf = ref.open_session(w, h, layout, seed=2), fast.open_session(w, h, layout, seed=2)
    for slot in slots:
        a = ref.step(sr, slot, FrameParams(steps=2))
        b = fast.step(sf, slot, FrameParams(steps=2))
        err = ((a - b).norm() / a.norm()).item()
        assert 0 < err < 0.1


def test_the_service_serves_fp8():
    from streamstyle.service.config import ServiceConfig
    from streamstyle.service.loader import build_stylizer

    stylizer, _ = build_stylizer(ServiceConfig(preset="tiny", dtype="fp8"), prompts=False)
    assert any(isinstance(m, Fp8Linear) for m in stylizer.model.modules())
    from streamstyle.model.errors import ConfigError

    with pytest.raises(ConfigError, match="fp8"):
        ServiceConfig(dtype="int4").validate()


@pytest.mark.gpu
def test_scaled_mm_matches_the_emulated_product(gen):
    from streamstyle.model.fp8 import scaled_mm_available

    if not scaled_mm_available(torch.device("cuda")):
        pytest.skip("this GPU has no FP8 tensor cores")
    lin = torch.nn.Linear(1152, 2880).cuda().bfloat16()
    f = Fp8Linear(lin)
    assert f.fast
    x = torch.randn(1152, 2040, generator=gen).cuda().bfloat16().t()  # column-major, as the Mix-FFN's gate
    fast = f(x).float()
    assert f.fast, "torch._scaled_mm refused the operands: the layer fell back to emulation"
    f.fast = False
    slow = f(x).float()
    assert ((fast - slow).norm() / slow.norm()) < 1e-2


@pytest.mark.gpu
def test_the_quantize_kernel_matches_its_reference_on_the_gpu(gen):
    from streamstyle.kernels.quantize import quantize_rows_reference
    from streamstyle.kernels.quantize.triton_kernel import quantize_rows_triton

    x = (torch.randn(2041, 1155, generator=gen) * torch.rand(2041, 1, generator=gen) * 30).cuda().bfloat16()
    x[7] = 0.0  # an all-zero row keeps a positive scale and zero values
    q, s = quantize_rows_triton(x)
    rq, rs = quantize_rows_reference(x)
    assert q.dtype == torch.float8_e4m3fn and s.shape == (2041, 1)
    assert torch.allclose(s, rs, rtol=1e-6) and bool((s > 0).all())
    # The GPU's float32 division may land a value on the other side of an e4m3 rounding boundary.
    differ = q.float() != rq.float()
    assert differ.float().mean() < 1e-3
    assert ((q.float() - rq.float()).abs() <= rq.float().abs() / 8 + 1e-3).all()  # within one e4m3 step
    assert bool((q[7].float() == 0).all())
