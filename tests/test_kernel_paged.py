"""Triton paged gather/scatter against the reference: odd page sizes, partial tail pages, pages out
of order, poisoned outputs, and the pool elsewhere untouched. Interpreter on the CPU."""

import pytest
import torch

pytest.importorskip("triton")

from streamstyle.kernels.paged import paged_gather_reference, paged_scatter_reference  # noqa: E402
from streamstyle.kernels.paged.triton_kernel import paged_gather_triton, paged_scatter_triton  # noqa: E402


@pytest.mark.parametrize("pages, e, used, numel", [(9, 37, 4, 130), (5, 1024, 3, 3 * 1024), (3, 7, 1, 1),
                                                   (12, 300, 7, 2001)])
def test_gather_and_scatter_match_the_reference(gen, pages, e, used, numel):
    pool = torch.randn(pages, e, generator=gen)
    table = torch.randperm(pages, generator=gen)[:used]
    out = torch.full((numel,), float("nan"))
    got = paged_gather_triton(pool, table, numel, out=out)
    assert torch.equal(got, paged_gather_reference(pool, table, numel))
    values = torch.randn(numel, generator=gen)
    a, b = pool.clone(), pool.clone()
    paged_scatter_triton(a, table, values)
    paged_scatter_reference(b, table, values)
    assert torch.equal(a, b)  # written pages equal, every other element (tail, other pages) untouched
    assert torch.equal(paged_gather_triton(a, table, numel), values)


def test_bf16_pool_and_int32_ids(gen):
    pool = torch.randn(6, 50, generator=gen).bfloat16()
    table = torch.tensor([4, 0, 2], dtype=torch.int32)
    assert torch.equal(paged_gather_triton(pool, table, 120), paged_gather_reference(pool, table.long(), 120))


def test_state_that_does_not_fit_its_pages_is_refused(gen):
    pool = torch.zeros(4, 10)
    with pytest.raises(ValueError, match="do not fit"):
        paged_gather_triton(pool, torch.tensor([0, 1]), 21)
    with pytest.raises(ValueError, match="contiguous"):
        paged_gather_triton(pool.t(), torch.tensor([0]), 2)


@pytest.mark.gpu
def test_kernels_on_the_gpu(gen):
    pool = torch.randn(64, 65536, generator=gen).cuda()
    table = torch.randperm(64, generator=gen)[:11].cuda()
    numel = 10 * 65536 + 12345
    assert torch.equal(paged_gather_triton(pool, table, numel), paged_gather_reference(pool, table, numel))
    values = torch.randn(numel, generator=gen).cuda()
    a, b = pool.clone(), pool.clone()
    paged_scatter_triton(a, table, values)
    paged_scatter_reference(b, table, values)
    assert torch.equal(a, b)
    for keep in (True, False):  # the guard read on the device
        c, d = pool.clone(), pool.clone()
        flag = torch.tensor(keep, device="cuda")
        paged_scatter_triton(c, table, values, keep=flag)
        paged_scatter_reference(d, table, values, keep=flag)
        assert torch.equal(c, d) and torch.equal(c, a if keep else pool)


@pytest.mark.parametrize("keep", [True, False])
def test_a_guarded_scatter_writes_only_when_told(gen, keep):
    """The guard is read on the device: True writes as the unguarded scatter does, False leaves
    every element of the pool as it was (the refused frame of a CUDA graph)."""
    pool = torch.randn(9, 37, generator=gen)
    table = torch.tensor([5, 2, 7, 1])
    values = torch.randn(130, generator=gen)
    flag = torch.tensor(keep)
    a, b, c = pool.clone(), pool.clone(), pool.clone()
    paged_scatter_triton(a, table, values, keep=flag)
    paged_scatter_reference(b, table, values, keep=flag)
    paged_scatter_reference(c, table, values)
    assert torch.equal(a, b)
    assert torch.equal(a, c if keep else pool)
    assert not torch.equal(c, pool)  # the write itself changes the pool: the False case has teeth
    with pytest.raises(ValueError, match="keep must be one bool"):
        paged_scatter_triton(a, table, values, keep=torch.tensor([1.0]))


def test_words_holding_bf16_pairs_move_bit_for_bit(gen):
    """The state stores bf16 values two to a float32 word; some pairs read as float32 NaNs or
    denormals. Gather and scatter (guarded or not) must carry them unchanged."""
    halves = torch.randn(2 * 300, generator=gen).bfloat16()
    halves[1::2][:50] = 0  # high half zero: a float32 denormal (or zero) pattern
    halves[1::2][50:60] = float("nan")
    words = halves.view(torch.float32)
    pool = torch.zeros(6, 97)
    table = torch.tensor([3, 1, 5, 4])
    for scatter, gather in ((paged_scatter_triton, paged_gather_triton),
                            (paged_scatter_reference, paged_gather_reference)):
        for keep in (None, torch.tensor(True)):
            p = pool.clone()
            scatter(p, table, words, keep=keep)
            got = gather(p, table, words.numel())
            assert torch.equal(got.view(torch.int32), words.view(torch.int32))
