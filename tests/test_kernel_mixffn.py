"""The Triton depthwise conv + SiLU gate kernel against its reference: odd grids (edges on every
side, grids narrower than a tile), channel counts that are not powers of two, NaN-poisoned outputs.
On the CPU it runs under TRITON_INTERPRET=1 (conftest sets it)."""

import pytest
import torch

pytest.importorskip("triton")

from streamstyle.kernels import backend  # noqa: E402
from streamstyle.kernels.mixffn import dwconv_gate, dwconv_gate_reference  # noqa: E402
from streamstyle.kernels.mixffn.triton_kernel import dwconv_gate_triton  # noqa: E402


def make(n, th, tw, h, gen, dtype=torch.float32, device="cpu", bias=True):
    e = torch.randn(n, th * tw, 2 * h, generator=gen).to(device, dtype)
    w = (torch.randn(2 * h, 1, 3, 3, generator=gen) * 0.5).to(device, dtype)
    b = (torch.randn(2 * h, generator=gen) * 0.5).to(device, dtype) if bias else None
    return e, w, b


@pytest.mark.parametrize("n, th, tw, h", [(1, 5, 7, 12), (2, 3, 19, 40), (1, 1, 1, 8), (1, 9, 33, 72), (2, 17, 4, 3)])
def test_kernel_matches_reference(gen, n, th, tw, h):
    e, w, b = make(n, th, tw, h, gen, bias=h != 3)
    out = torch.full((n, th * tw, h), float("nan"))
    got = dwconv_gate_triton(e, (th, tw), w, b, out=out)
    want = dwconv_gate_reference(e, (th, tw), w, b)
    assert got is out and not torch.isnan(got).any()
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("rows", [1, 2, 3, 64])
def test_strips_of_any_height_meet_at_their_edges(gen, monkeypatch, rows):
    """Each program walks a strip of `rows` grid rows with a halo row above and below: the rows
    where two strips meet, and a strip taller than the grid, give the reference's values."""
    from streamstyle.kernels.mixffn import triton_kernel as tk

    monkeypatch.setattr(tk, "ROWS", rows)
    e, w, b = make(2, 7, 5, 9, gen)
    out = torch.full((2, 35, 9), float("nan"))
    got = dwconv_gate_triton(e, (7, 5), w, b, out=out)
    assert not torch.isnan(got).any()
    assert torch.allclose(got, dwconv_gate_reference(e, (7, 5), w, b), atol=1e-5, rtol=1e-4)


def test_kernel_keeps_bf16(gen):
    e, w, b = make(1, 6, 10, 24, gen, dtype=torch.bfloat16)
    got = dwconv_gate_triton(e, (6, 10), w, b)
    exact = dwconv_gate_reference(e.float(), (6, 10), w.float(), b.float())
    # float32 inside, one rounding to bf16 at the end (the reference rounds after each op)
    assert got.dtype == torch.bfloat16 and (got.float() - exact).abs().max() < 1e-2 * exact.abs().max()


def test_bad_shapes_are_refused(gen):
    e, w, b = make(1, 4, 4, 8, gen)
    with pytest.raises(ValueError, match="does not hold"):
        dwconv_gate_triton(e, (4, 5), w, b)
    with pytest.raises(ValueError, match="two halves"):
        dwconv_gate_triton(torch.zeros(1, 16, 7), (4, 4), torch.zeros(7, 1, 3, 3), None)


def test_the_switch_uses_the_kernel_only_where_asked(gen):
    e, w, b = make(1, 5, 6, 16, gen)
    ref = dwconv_gate(e, (5, 6), w, b)  # auto on the CPU: the reference
    assert torch.equal(ref, dwconv_gate_reference(e, (5, 6), w, b))
    backend.set_backend("triton")
    try:
        assert torch.allclose(dwconv_gate(e, (5, 6), w, b), ref, atol=1e-5)
    finally:
        backend.set_backend("auto")


@pytest.mark.gpu
def test_kernel_matches_reference_on_the_gpu(gen):
    e, w, b = make(1, 68, 120, 576, gen, dtype=torch.bfloat16, device="cuda")
    got = dwconv_gate_triton(e, (68, 120), w, b)
    want = dwconv_gate_reference(e.float(), (68, 120), w.float(), b.float())  # the exact value
    err = (got.float() - want).abs()
    assert err.max() < 0.1 * want.abs().max() and err.mean() < 1e-2
