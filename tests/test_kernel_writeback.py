"""The Triton write-back kernel against its reference, byte for byte: both output formats, values
outside [0, 1], exact rounding ties and their float neighbours, cropped (strided) views of a padded frame, and the bytes past
the frame left as they were. On the CPU it runs under TRITON_INTERPRET=1 (conftest sets it)."""

import pytest
import torch

pytest.importorskip("triton")

from streamstyle.kernels import backend  # noqa: E402
from streamstyle.kernels.writeback import write_rgba, write_rgba_reference  # noqa: E402
from streamstyle.kernels.writeback.triton_kernel import write_rgba_triton  # noqa: E402


def frame(h, w, gen, pad=(0, 0)):
    full = torch.rand(3, h + pad[0], w + pad[1], generator=gen) * 1.4 - 0.2  # some of it out of range
    ties = (torch.randint(0, 255, (3, h, w), generator=gen).float() + 0.5) / 255  # k + 1/2 levels
    # and their float32 neighbours: where a fused multiply-add (exact product) and torch (rounded
    # product) round to different bytes
    side = torch.randint(-1, 2, (3, h, w), generator=gen).float()
    ties = torch.where(side == 0, ties, torch.nextafter(ties, ties + side))
    pick = torch.rand(3, h, w, generator=gen) < 0.3
    rgb = full[:, :h, :w]  # a cropped view when padded, as the service hands it over
    rgb[pick] = ties[pick]
    return rgb


@pytest.mark.parametrize("fmt", ["rgba8", "rgba16f"])
@pytest.mark.parametrize("h, w, pad", [(17, 23, (0, 0)), (45, 80, (3, 16)), (1, 1, (0, 0))])
def test_kernel_matches_reference_byte_for_byte(gen, fmt, h, w, pad):
    rgb = frame(h, w, gen, pad)
    size = h * w * (4 if fmt == "rgba8" else 8)
    got = torch.full((size + 64,), 0xAB, dtype=torch.uint8)  # poisoned, with a tail that must survive
    want = got.clone()
    write_rgba_triton(rgb, got, fmt)
    write_rgba_reference(rgb, want, fmt)
    assert torch.equal(got, want)
    assert bool((got[size:] == 0xAB).all())


def test_bad_calls_are_refused(gen):
    rgb = frame(4, 4, gen)
    with pytest.raises(ValueError, match="output format"):
        write_rgba_triton(rgb, torch.zeros(64, dtype=torch.uint8), "bgra8")
    with pytest.raises(ValueError, match="needs 128"):
        write_rgba_triton(rgb, torch.zeros(100, dtype=torch.uint8), "rgba16f")
    with pytest.raises(ValueError, match="output format"):
        write_rgba_reference(rgb, torch.zeros(64, dtype=torch.uint8), "bgra8")


def test_the_switch_uses_the_kernel_only_where_asked(gen):
    rgb = frame(6, 5, gen)
    a, b = torch.zeros(120, dtype=torch.uint8), torch.zeros(120, dtype=torch.uint8)
    write_rgba(rgb, a, "rgba8")  # auto on the CPU: the reference
    backend.set_backend("triton")
    try:
        write_rgba(rgb, b, "rgba8")
    finally:
        backend.set_backend("auto")
    assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", ["rgba8", "rgba16f"])
def test_kernel_matches_reference_on_the_gpu(gen, fmt):
    rgb = frame(1080, 1920, gen, pad=(8, 0)).cuda()
    size = 1080 * 1920 * (4 if fmt == "rgba8" else 8)
    got = torch.zeros(size, dtype=torch.uint8, device="cuda")
    want = torch.zeros_like(got)
    write_rgba_triton(rgb, got, fmt)
    write_rgba_reference(rgb, want, fmt)
    assert torch.equal(got, want)
