"""The fused Triton decode against its reference: odd sizes, strides 1/2/4, padding at the image
border, poisoned output; and the decoder module through the switch. Interpreter on the CPU."""

import pytest
import torch

pytest.importorskip("triton")

from streamstyle.kernels import backend  # noqa: E402
from streamstyle.kernels.decoder import guided_decode_reference  # noqa: E402
from streamstyle.kernels.decoder.triton_kernel import guided_decode_triton, packed_weights  # noqa: E402
from streamstyle.model.config import preset  # noqa: E402
from streamstyle.model.decoder import GuidedDecoder  # noqa: E402


def params(c, cin, gen, device="cpu"):
    t = [torch.randn(c, cin, 3, 3, generator=gen) * 0.3, torch.randn(c, generator=gen) * 0.1,
         torch.randn(c, c, 1, 1, generator=gen) * 0.3, torch.randn(c, generator=gen) * 0.1,
         torch.randn(3, c, 1, 1, generator=gen) * 0.3, torch.randn(3, generator=gen) * 0.1]
    return [p.to(device) for p in t]


@pytest.mark.parametrize("n, h, w, stride, c, cg", [(1, 5, 7, 4, 16, 10), (2, 3, 9, 2, 8, 10), (1, 6, 4, 1, 16, 13),
                                                    (1, 2, 2, 4, 32, 10)])
def test_kernel_matches_reference(gen, n, h, w, stride, c, cg):
    lat = torch.rand(n, 3, h, w, generator=gen) * 2 - 1
    guide = torch.rand(n, cg, h * stride, w * stride, generator=gen) * 2 - 1
    p = params(c, 3 + cg, gen)
    out = torch.full((n, 3, h * stride, w * stride), float("nan"))
    got = guided_decode_triton(lat, guide, packed_weights(*p), stride, out=out)
    want = guided_decode_reference(lat, guide, *p, stride)
    assert not torch.isnan(got).any()
    assert torch.allclose(got, want, atol=1e-5)
    assert (want > 0).any() and (want < 1).any()


def test_the_module_runs_the_kernel_only_where_asked(gen):
    dec = GuidedDecoder(preset("tiny")).eval()
    lat = torch.rand(1, 3, 4, 6, generator=gen) * 2 - 1
    guide = torch.rand(1, 10, 16, 24, generator=gen) * 2 - 1
    with torch.no_grad():
        ref = dec(lat, guide)
        backend.set_backend("triton")
        try:
            fast = dec(lat, guide)
            dec.conv.weight.mul_(0.5)  # new weights: the packed copy must follow
            assert not torch.allclose(dec(lat, guide), fast)
            dec.conv.weight.mul_(2.0)
            assert torch.allclose(dec(lat, guide), fast, atol=1e-6)
        finally:
            backend.set_backend("auto")
    assert torch.allclose(fast, ref, atol=1e-5)


@pytest.mark.gpu
def test_kernel_matches_reference_on_the_gpu(gen):
    """bf16 inputs, as the service runs it; the oracle is the float32 reference on the same
    (bf16-rounded) inputs, so only the kernel's own error counts (TF32 tensor-core products)."""
    lat = (torch.rand(1, 3, 180, 320, generator=gen) * 2 - 1).cuda().bfloat16()
    guide = (torch.rand(1, 10, 720, 1280, generator=gen) * 2 - 1).cuda().bfloat16()
    p = [t.bfloat16() for t in params(16, 13, gen, "cuda")]
    got = guided_decode_triton(lat, guide, packed_weights(*p), 4)
    want = guided_decode_reference(lat.float(), guide.float(), *[t.float() for t in p], 4)
    assert (got - want).abs().max() < 5e-3


@pytest.mark.parametrize("fmt", ["rgba8", "rgba16f"])
@pytest.mark.parametrize("crop", [(0, 0), (3, 5)])
def test_the_decode_writes_the_engines_format_in_its_last_pass(gen, fmt, crop):
    """Fused write-back: the kernel's RGBA bytes equal its own planar output written by the
    write-back kernel, byte for byte, cropped to the frame; bytes past the frame are untouched."""
    from streamstyle.kernels.decoder.triton_kernel import guided_decode_rgba_triton
    from streamstyle.kernels.writeback.triton_kernel import write_rgba_triton

    h, w, s = 5, 7, 4
    lat = torch.rand(1, 3, h, w, generator=gen) * 2 - 1
    guide = torch.rand(1, 10, h * s, w * s, generator=gen) * 2 - 1
    weights = packed_weights(*params(16, 13, gen))
    fw, fh = w * s - crop[1], h * s - crop[0]
    size = fw * fh * (4 if fmt == "rgba8" else 8)
    got = torch.full((size + 32,), 0xAB, dtype=torch.uint8)
    want = got.clone()
    guided_decode_rgba_triton(lat, guide, weights, s, got, fmt, fw, fh)
    write_rgba_triton(guided_decode_triton(lat, guide, weights, s)[0, :, :fh, :fw], want, fmt)
    assert torch.equal(got, want) and bool((got[size:] == 0xAB).all())


def test_the_rgba_decode_refuses_what_does_not_fit(gen):
    from streamstyle.kernels.decoder import guided_decode_rgba

    dec = GuidedDecoder(preset("tiny")).eval()
    lat = torch.rand(1, 3, 4, 6, generator=gen) * 2 - 1
    guide = torch.rand(1, 10, 16, 24, generator=gen) * 2 - 1
    p = (dec.conv.weight, dec.conv.bias, dec.mix.weight, dec.mix.bias, dec.out.weight, dec.out.bias)
    slot = torch.zeros(24 * 16 * 8, dtype=torch.uint8)
    with torch.no_grad():
        with pytest.raises(ValueError, match="does not fit"):
            guided_decode_rgba(lat, guide, *p, 4, slot, "rgba8", 25, 16)
        with pytest.raises(ValueError, match="needs"):
            guided_decode_rgba(lat, guide, *p, 4, slot[:100], "rgba8", 24, 16)
        with pytest.raises(ValueError, match="output format"):
            guided_decode_rgba(lat, guide, *p, 4, slot, "bgra8", 24, 16)
        with pytest.raises(ValueError, match="one frame"):
            guided_decode_rgba(lat.expand(2, -1, -1, -1), guide.expand(2, -1, -1, -1), *p, 4, slot, "rgba8", 24, 16)
