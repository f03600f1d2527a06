"""The Triton finiteness test against its reference: planes with padded rows (a row pitch past the
pixels, poisoned with NaN that must not count), half and single floats, NaN and both infinities
at the first and last value of a row, one plane bad among several, and the layout's own views of a
slot. On the CPU it runs under TRITON_INTERPRET=1 (conftest sets it)."""

import pytest
import torch

pytest.importorskip("triton")

from streamstyle.kernels import backend  # noqa: E402
from streamstyle.kernels.finite import all_finite, all_finite_reference  # noqa: E402
from streamstyle.kernels.finite.triton_kernel import all_finite_triton  # noqa: E402
from streamstyle.model.layout import reference_layout  # noqa: E402


def plane(h, w, c, pad, dtype, gen, device="cpu"):
    """An [h, w, c] view over rows of w * c + pad values; the padding holds NaN."""
    pitch = w * c + pad
    store = torch.full((h * pitch,), float("nan"), dtype=dtype)
    view = store.as_strided((h, w, c), (pitch, c, 1))
    view.copy_((torch.randn(h, w, c, generator=gen) * 1000).to(dtype))
    store = store.to(device)
    return store.as_strided((h, w, c), (pitch, c, 1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("h, w, c, pad", [(17, 23, 4, 5), (3, 700, 2, 0), (1, 1, 1, 0), (9, 1100, 3, 64)])
@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), float("-inf")])
def test_kernel_matches_reference(gen, dtype, h, w, c, pad, bad):
    p = plane(h, w, c, pad, dtype, gen)
    if bad is not None:
        y, x, k = [int(torch.randint(0, n, (1,), generator=gen)) for n in (h, w, c)]
        p[y, x, k] = bad
    want = all_finite_reference([p])
    assert bool(want) == (bad is None)  # the padding's NaN is not part of the plane
    assert bool(all_finite_triton([p])) == bool(want)


@pytest.mark.parametrize("where", [(0, 0, 0), (-1, -1, -1), (4, -1, 2), (5, 0, 0)])
def test_row_edges_and_one_bad_plane_among_several(gen, where):
    planes = [plane(6, 130, 3, 7, torch.float16, gen), plane(6, 130, 1, 0, torch.float32, gen)]
    assert bool(all_finite_triton(planes))
    planes[1 if where[0] == 5 else 0][where[0], where[1], where[2] if where[2] < 1 else 0] = float("inf")
    assert not bool(all_finite_triton(planes))


def test_the_layouts_float_planes(gen):
    w, h = 37, 21
    layout = reference_layout(w, h)
    slot = torch.zeros(layout.slot_bytes(w, h), dtype=torch.uint8)
    views = layout.view(slot, w, h)
    floats = [v for v in views.values() if v.is_floating_point()]
    assert len(floats) >= 3
    assert bool(all_finite_triton(floats))
    views["motion"][h - 1, w - 1, 1] = float("nan")
    assert not bool(all_finite_triton(floats)) and not bool(all_finite_reference(floats))


def test_refusals(gen):
    with pytest.raises(ValueError, match="at least one plane"):
        all_finite_triton([])
    with pytest.raises(ValueError, match="int32 plane"):
        all_finite_triton([torch.zeros(2, 2, 1, dtype=torch.int32)])
    with pytest.raises(ValueError, match="not rows of contiguous values"):
        all_finite_triton([torch.zeros(4, 4, 2).transpose(0, 1)])
    with pytest.raises(ValueError, match="at least one plane"):
        all_finite([])


def test_the_switch_uses_the_kernel_only_where_asked(gen):
    p = plane(5, 9, 2, 3, torch.float16, gen)
    backend.set_backend("triton")
    try:
        assert bool(all_finite([p]))
    finally:
        backend.set_backend("auto")
    assert bool(all_finite([p]))  # auto on the CPU: the reference


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_kernel_matches_reference_on_the_gpu(gen, dtype):
    p = plane(1088, 1920, 4, 128, dtype, gen, device="cuda")
    assert bool(all_finite_triton([p])) and bool(all_finite_reference([p]))
    p[1087, 1919, 3] = float("nan")
    assert not bool(all_finite_triton([p]))
    p[1087, 1919, 3] = 0.0
    p[0, 0, 0] = float("-inf")
    assert not bool(all_finite_triton([p]))
