"""The kernel references against independent formulations, on random odd sizes."""

import math

import pytest
import torch

from streamstyle.kernels.gbuffer_pack import PackKind, PackSpec, pack_gbuffers
from streamstyle.kernels.linear_attention import linear_attention, linear_attention_causal
from streamstyle.kernels.paged import paged_gather, paged_scatter


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_linear_attention_stepwise_equals_causal_sequence(gen):
    b, f, h, t, d = 2, 5, 3, 37, 7
    q, k, v = (torch.randn(b, f, h, t, d, generator=gen) for _ in range(3))
    kv0 = torch.rand(b, h, d, d, generator=gen)
    ks0 = torch.rand(b, h, d, generator=gen)
    decay = torch.rand(h, generator=gen) * 0.8 + 0.1
    o_seq, kv_seq, ks_seq = linear_attention_causal(q, k, v, kv0, ks0, decay, 1e-4)
    kv, ks = kv0, ks0
    for i in range(f):
        o, kv, ks = linear_attention(q[:, i], k[:, i], v[:, i], kv, ks, decay, 1e-4)
        assert rel_err(o, o_seq[:, i]) < 1e-5
    assert rel_err(kv, kv_seq) < 1e-5 and rel_err(ks, ks_seq) < 1e-5


def test_linear_attention_matches_explicit_loop_over_tokens(gen):
    h, t, d = 2, 9, 5
    q, k, v = (torch.randn(1, h, t, d, generator=gen, dtype=torch.float64) for _ in range(3))
    kv0 = torch.zeros(1, h, d, d, dtype=torch.float64)
    ks0 = torch.zeros(1, h, d, dtype=torch.float64)
    o, _, _ = linear_attention(q, k, v, kv0, ks0, torch.full((h,), 0.5), 1e-4)
    for head in range(h):
        for n in range(t):
            w = torch.relu(q[0, head, n]) @ torch.relu(k[0, head]).T  # [t] unnormalised scores
            expect = (w @ v[0, head]) / (w.sum() + 1e-4)
            assert torch.allclose(o[0, head, n].double(), expect, atol=1e-5)


def test_paged_gather_scatter_round_trip_on_odd_sizes(gen):
    pool = torch.full((13, 7), float("nan"))
    table = torch.tensor([11, 2, 7, 5], dtype=torch.int64)
    values = torch.randn(26, generator=gen)  # 3 full pages and 5 of the 4th
    paged_scatter(pool, table, values)
    assert torch.equal(paged_gather(pool, table, 26), values)
    out = torch.zeros(26)
    assert paged_gather(pool, table, 26, out=out) is out and torch.equal(out, values)
    assert torch.equal(pool[5, :5], values[21:])
    assert torch.isnan(pool[5, 5:]).all()  # the tail page's unused part is untouched
    untouched = [i for i in range(13) if i not in (11, 2, 7, 5)]
    assert torch.isnan(pool[untouched]).all()


def test_pack_normalises_each_encoding_and_averages_down(gen):
    h, w = 12, 20
    color = torch.rand(1, h, w, 4, generator=gen) * 5
    depth = torch.rand(1, h, w, 1, generator=gen) * 99 + 1
    albedo = torch.randint(0, 256, (1, h, w, 4), generator=gen, dtype=torch.int32).to(torch.uint8)
    specs = [PackSpec(0, 3, PackKind.TONEMAP, 1.0, 0.0), PackSpec(0, 1, PackKind.LOG_DEPTH, 0.5, 200.0),
             PackSpec(1, 2, PackKind.AFFINE, 2 / 255, -1.0)]
    full, low = pack_gbuffers([color, depth, albedo], specs, 4)
    assert full.shape == (1, 6, h, w) and low.shape == (1, 6, h // 4, w // 4)
    c = color[0, 5, 7, :3]
    assert torch.allclose(full[0, :3, 5, 7], 2 * (c / (1 + c)) ** (1 / 2.2) - 1, atol=1e-6)
    dv = depth[0, 5, 7, 0]
    assert math.isclose(full[0, 3, 5, 7].item(), 2 * math.log(dv / 0.5) / math.log(400) - 1, rel_tol=1e-5)
    assert torch.allclose(full[0, 4:6, 5, 7], albedo[0, 5, 7, 1:3].float() * 2 / 255 - 1)
    assert torch.allclose(low[0, :, 1, 2], full[0, :, 4:8, 8:12].mean(dim=(1, 2)), atol=1e-6)
    assert full.abs().max() <= 1.0


def test_pack_rejects_mismatched_specs():
    with pytest.raises(ValueError):
        pack_gbuffers([torch.zeros(1, 4, 4, 1)], [], 2)
