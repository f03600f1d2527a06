"""The Triton warp kernel against its reference: random odd sizes, motion that leaves the frame,
lands on exact texel centres and on half-texel ties, depth edges, NaN-poisoned outputs. On the CPU
it runs under TRITON_INTERPRET=1 (conftest sets it)."""

import pytest
import torch

pytest.importorskip("triton")

from streamstyle.kernels import backend  # noqa: E402
from streamstyle.kernels.warp import warp_previous, warp_previous_reference  # noqa: E402
from streamstyle.kernels.warp.triton_kernel import warp_previous_triton  # noqa: E402


def case(b, c, h, w, gen, device="cpu", dtype=torch.float32, snap=None):
    lat = torch.randn(b, c, h, w, generator=gen).to(device, dtype)
    # blocky depth: surfaces with edges, so the depth test passes and fails
    pd = (torch.randint(1, 4, (b, 1, (h + 3) // 4, (w + 3) // 4), generator=gen).float() * 10)
    pd = pd.repeat_interleave(4, 2).repeat_interleave(4, 3)[..., :h, :w].contiguous().to(device)
    cur = pd + torch.randn(b, 1, h, w, generator=gen).to(device) * 0.2
    motion = torch.randn(b, 2, h, w, generator=gen) * 3  # some of it leaves the frame
    if snap is not None:  # exact texel centres, or half-texel ties
        motion = torch.round(motion) + snap
    return lat, pd, motion.to(device), cur.to(device)


@pytest.mark.parametrize("b, c, h, w, snap", [(1, 3, 17, 23, None), (2, 3, 9, 40, 0.0), (2, 4, 33, 7, 0.5),
                                              (1, 1, 1, 1, None), (1, 3, 45, 80, None)])
def test_kernel_matches_reference(gen, b, c, h, w, snap):
    lat, pd, motion, cur = case(b, c, h, w, gen, snap=snap)
    poisoned = (torch.full_like(lat, float("nan")), torch.full((b, 1, h, w), 7, dtype=torch.uint8))
    warped, valid = warp_previous_triton(lat, pd, motion, cur, 0.05, outputs=poisoned)
    rw, rv = warp_previous_reference(lat, pd, motion, cur, 0.05)
    assert not torch.isnan(warped).any()
    assert torch.allclose(warped, rw, atol=1e-5, rtol=1e-5)
    assert valid.dtype == torch.bool and torch.equal(valid, rv)
    assert 0 < rv.float().mean() < 1 or h * w == 1  # the case exercises both outcomes


def test_kernel_keeps_the_latent_dtype(gen):
    lat, pd, motion, cur = case(1, 3, 12, 20, gen, dtype=torch.bfloat16)
    warped, valid = warp_previous_triton(lat, pd, motion, cur, 0.05)
    rw, rv = warp_previous_reference(lat, pd, motion, cur, 0.05)
    assert warped.dtype == torch.bfloat16
    assert torch.allclose(warped.float(), rw.float(), atol=2e-2) and torch.equal(valid, rv)


def test_the_switch_uses_the_kernel_only_where_asked(gen):
    lat, pd, motion, cur = case(1, 3, 10, 10, gen)
    ref = warp_previous(lat, pd, motion, cur, 0.05)  # auto on the CPU: the reference
    assert torch.equal(ref[0], warp_previous_reference(lat, pd, motion, cur, 0.05)[0])
    backend.set_backend("triton")
    try:
        fast = warp_previous(lat, pd, motion, cur, 0.05)
        assert torch.allclose(fast[0], ref[0], atol=1e-5) and torch.equal(fast[1], ref[1])
        with pytest.raises(RuntimeError, match="cannot run warp"):
            warp_previous(torch.zeros(1, 20, 4, 4), pd[..., :4, :4], motion[..., :4, :4], cur[..., :4, :4], 0.05)
    finally:
        backend.set_backend("auto")


@pytest.mark.gpu
def test_kernel_matches_reference_on_the_gpu(gen):
    """On the GPU Triton's float32 division is an approximate reciprocal (2 ulp), and the
    reference's grid round trip scales that by w / 2: source coordinates can differ by ~1e-4 of a
    texel. So: warped values within that much of a texel's gradient, and the nearest-texel depth
    test flipping only for sources that sit that close to a texel boundary (a handful of pixels)."""
    lat, pd, motion, cur = case(2, 3, 180, 320, gen, device="cuda")
    warped, valid = warp_previous_triton(lat, pd, motion, cur, 0.05)
    rw, rv = warp_previous_reference(lat, pd, motion, cur, 0.05)
    assert (warped - rw).abs().max() < 5e-3
    assert (warped - rw).abs().mean() < 1e-5
    assert (valid != rv).float().mean() < 1e-3
