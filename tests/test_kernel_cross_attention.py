"""The Triton cross-attention kernel against its reference (PyTorch's SDPA with an additive bias):
odd token counts, contexts that are not powers of two, padding at -inf, blend weights as log
biases, strided inputs as the model makes them, NaN-poisoned outputs. On the CPU it runs under
TRITON_INTERPRET=1 (conftest sets it)."""

import pytest
import torch

pytest.importorskip("triton")

from streamstyle.kernels import backend  # noqa: E402
from streamstyle.kernels.cross_attention import cross_attention, cross_attention_reference  # noqa: E402
from streamstyle.kernels.cross_attention.triton_kernel import cross_attention_triton  # noqa: E402


def make(n, h, t, length, d, gen, real=None, dtype=torch.float32, device="cpu"):
    """q as the model views it (token-major memory), k and v as permuted views of one projection."""
    q = torch.randn(n, t, h, d, generator=gen).to(device, dtype).transpose(1, 2)
    kv = torch.randn(n, length, 2, h, d, generator=gen).to(device, dtype)
    k, v = kv.permute(2, 0, 3, 1, 4)
    bias = torch.full((n, length), float("-inf"))
    for i in range(n):
        m = real if real is not None else length
        w = torch.rand(m, generator=gen) + 0.1
        bias[i, :m] = torch.log(w / w.sum())
    return q, k, v, bias.to(device)


@pytest.mark.parametrize("n, h, t, length, d, real", [(1, 2, 37, 16, 16, 5), (2, 3, 70, 48, 32, None),
                                                      (1, 1, 1, 128, 16, 1), (2, 2, 129, 20, 16, 20)])
def test_kernel_matches_reference(gen, n, h, t, length, d, real):
    q, k, v, bias = make(n, h, t, length, d, gen, real)
    out = torch.full((n, h, t, d), float("nan"))
    got = cross_attention_triton(q, k, v, bias, out=out)
    want = cross_attention_reference(q, k, v, bias)
    assert got is out and not torch.isnan(got).any()
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_default_output_is_token_major(gen):
    q, k, v, bias = make(1, 3, 10, 16, 16, gen)
    o = cross_attention_triton(q, k, v, bias)
    assert o.shape == (1, 3, 10, 16) and o.transpose(1, 2).is_contiguous()  # projected without a copy


def test_unsupported_shapes_are_refused(gen):
    q, k, v, bias = make(1, 1, 4, 300, 16, gen)
    with pytest.raises(ValueError, match="over 256"):
        cross_attention_triton(q, k, v, bias)
    q, k, v, bias = make(1, 1, 4, 8, 24, gen)
    with pytest.raises(ValueError, match="power of two"):
        cross_attention_triton(q, k, v, bias)


def test_the_switch_uses_the_kernel_only_where_asked(gen):
    q, k, v, bias = make(1, 2, 20, 16, 16, gen, real=3)
    ref = cross_attention(q, k, v, bias)  # auto on the CPU: the reference
    assert torch.equal(ref, cross_attention_reference(q, k, v, bias))
    backend.set_backend("triton")
    try:
        assert torch.allclose(cross_attention(q, k, v, bias), ref, atol=1e-4)
    finally:
        backend.set_backend("auto")


@pytest.mark.gpu
def test_kernel_matches_reference_on_the_gpu(gen):
    q, k, v, bias = make(1, 12, 8160, 128, 32, gen, real=40, dtype=torch.bfloat16, device="cuda")
    got = cross_attention_triton(q, k, v, bias)
    want = cross_attention_reference(q.float(), k.float(), v.float(), bias)
    err = (got.float() - want).abs()
    assert err.max() < 3e-2 and err.mean() < 2e-3
