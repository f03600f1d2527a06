"""The Triton residual + norm + adaLN kernel against its reference: every combination the block
uses, random odd sizes, widths that are not powers of two, NaN-poisoned outputs. On the CPU it runs
under TRITON_INTERPRET=1 (conftest sets it)."""

import pytest
import torch

pytest.importorskip("triton")

from streamstyle.kernels import backend  # noqa: E402
from streamstyle.kernels.adaln import residual_norm, residual_norm_reference  # noqa: E402
from streamstyle.kernels.adaln.triton_kernel import residual_norm_triton  # noqa: E402

# (delta, gate, norm, tables): the block's uses and the final layer's, plus the bare forms
USES = [
    dict(norm="modulate", shift=0, scale=1, norm_table=True),  # norm1 + modulate
    dict(delta=True, gate=2, gate_table=True, norm="affine", weight=True, bias=True),  # gated residual + norm2
    dict(delta=True, norm="modulate", shift=3, scale=4, norm_table=True),  # residual + norm3 + modulate
    dict(delta=True, gate=5, gate_table=True, norm=None),  # gated residual alone (the last block)
    # gated residual + the following block's norm1 (its own table): the blocks' shared pass
    dict(delta=True, gate=5, gate_table=True, norm="modulate", shift=0, scale=1, norm_table=True),
    dict(norm="modulate", shift=0, scale=1),  # final layer: no table
    dict(delta=True, norm="affine"),  # plain residual + LayerNorm without affine parameters
]


def make(n, t, d, s, gen, use, dtype=torch.float32, device="cpu"):
    r = lambda *shape: (torch.randn(*shape, generator=gen)).to(device, dtype)  # noqa: E731
    kw = dict(norm=use["norm"], gate=use.get("gate"), shift=use.get("shift"), scale=use.get("scale"), eps=1e-6)
    x = r(n, t, d) * 3 + 1  # off-centre rows: the mean matters
    if use.get("delta"):
        kw["delta"] = r(n, t, d)
    if use.get("gate") is not None or use["norm"] == "modulate":
        kw["mod"] = r(n, t, s, d) * 0.5
    for name in ("gate_table", "norm_table"):
        if use.get(name):
            kw[name] = r(s, d) * 0.5
    if use.get("weight"):
        kw["weight"], kw["bias"] = r(d) + 1, r(d)
    return x, kw


@pytest.mark.parametrize("n, t, d", [(1, 37, 48), (2, 19, 96), (1, 5, 1152), (3, 1, 8)])
@pytest.mark.parametrize("use", range(len(USES)))
def test_kernel_matches_reference(gen, n, t, d, use):
    u = USES[use]
    s = 6 if u["norm"] != "modulate" or u.get("norm_table") else 2
    x, kw = make(n, t, d, s, gen, u)
    poisoned = (torch.full_like(x, float("nan")), torch.full_like(x, float("nan")))
    r, y = residual_norm_triton(x, outputs=poisoned, **kw)
    rr, ry = residual_norm_reference(x, **kw)
    assert torch.allclose(r, rr, atol=1e-5, rtol=1e-5)
    if u["norm"] is None:
        assert y is None and ry is None
    else:
        assert not torch.isnan(y).any()
        assert torch.allclose(y, ry, atol=1e-4, rtol=1e-4)
    if "delta" not in kw:
        assert r is x  # no residual: x is passed through, not copied


def test_kernel_keeps_bf16(gen):
    x, kw = make(1, 40, 96, 6, gen, USES[1], dtype=torch.bfloat16)
    r, y = residual_norm_triton(x, **kw)
    rr, ry = residual_norm_reference(x, **kw)
    assert r.dtype == y.dtype == torch.bfloat16
    assert (r.float() - rr.float()).abs().max() < 0.1 and (y.float() - ry.float()).abs().max() < 0.1


def test_bad_arguments_are_refused(gen):
    x, kw = make(1, 4, 16, 6, gen, USES[0])
    with pytest.raises(ValueError, match="norm must be"):
        residual_norm_triton(x, **{**kw, "norm": "rms"})
    with pytest.raises(ValueError, match="does not match"):
        residual_norm_triton(x, **{**kw, "mod": kw["mod"][:, :3]})


def test_the_switch_uses_the_kernel_only_where_asked(gen):
    x, kw = make(1, 12, 32, 6, gen, USES[1])
    ref = residual_norm(x, **kw)  # auto on the CPU: the reference
    assert torch.equal(ref[1], residual_norm_reference(x, **kw)[1])
    backend.set_backend("triton")
    try:
        fast = residual_norm(x, **kw)
        assert torch.allclose(fast[1], ref[1], atol=1e-4)
        with pytest.raises(RuntimeError, match="cannot run adaln"):
            residual_norm(torch.zeros(1, 1, 8200), norm="affine")
    finally:
        backend.set_backend("auto")


@pytest.mark.gpu
@pytest.mark.parametrize("d", [384, 1152])
def test_kernel_matches_reference_on_the_gpu(gen, d):
    for u in USES:
        x, kw = make(1, 2040, d, 6, gen, u, dtype=torch.bfloat16, device="cuda")
        r, y = residual_norm_triton(x, **kw)
        rr, ry = residual_norm_reference(x, **kw)
        assert (r.float() - rr.float()).abs().max() <= 0.07  # one bf16 ulp at |r| ~ 10
        if y is not None:
            # the kernel normalises in float32 where the reference rounds each step to bf16
            assert ((y.float() - ry.float()).abs().mean() < 1e-2) and (y.float() - ry.float()).abs().max() < 0.25
