"""The Triton linear-attention kernel against its reference: random odd sizes, outputs poisoned
with NaN, relative error. On the CPU it runs under TRITON_INTERPRET=1 (conftest sets it)."""

import pytest
import torch

triton = pytest.importorskip("triton")

from streamstyle.kernels import backend  # noqa: E402
from streamstyle.kernels.linear_attention import linear_attention, linear_attention_reference  # noqa: E402
from streamstyle.kernels.linear_attention.triton_kernel import linear_attention_triton  # noqa: E402


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def inputs(b, h, t, d, gen, device="cpu", dtype=torch.float32, transposed=True):
    if transposed:  # as the model makes them: a permuted view of one qkv tensor
        qkv = torch.randn(b, t, 3, h, d, generator=gen).to(device, dtype)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
    else:
        q, k, v = (torch.randn(b, h, t, d, generator=gen).to(device, dtype) for _ in range(3))
    kv = torch.rand(b, h, d, d, generator=gen).to(device)
    ks = torch.rand(b, h, d, generator=gen).to(device)
    decay = (torch.rand(h, generator=gen) * 0.8 + 0.1).to(device)
    return q, k, v, kv, ks, decay


@pytest.mark.parametrize("b, h, t, d, transposed", [(2, 3, 37, 16, True), (1, 2, 600, 32, False),
                                                    (1, 1, 1, 16, True), (2, 2, 1100, 32, True)])
def test_kernel_matches_reference_on_odd_sizes(gen, b, h, t, d, transposed):
    q, k, v, kv, ks, decay = inputs(b, h, t, d, gen, transposed=transposed)
    poisoned = (torch.full_like(q, float("nan")), torch.full_like(kv, float("nan")), torch.full_like(ks, float("nan")))
    o, kv2, ks2 = linear_attention_triton(q, k, v, kv, ks, decay, 1e-4, outputs=poisoned)
    ro, rkv, rks = linear_attention_reference(q, k, v, kv, ks, decay, 1e-4)
    assert not torch.isnan(o).any() and not torch.isnan(kv2).any() and not torch.isnan(ks2).any()
    assert rel(o, ro) < 1e-5 and rel(kv2, rkv) < 1e-5 and rel(ks2, rks) < 1e-5


def test_kernel_refuses_head_dims_it_cannot_take(gen):
    q, k, v, kv, ks, decay = inputs(1, 1, 8, 12, gen)
    with pytest.raises(ValueError, match="head dim 12"):
        linear_attention_triton(q, k, v, kv, ks, decay, 1e-4)


def test_the_switch_picks_the_reference_on_the_cpu_and_when_training(gen):
    q, k, v, kv, ks, decay = inputs(1, 2, 20, 16, gen)
    out = linear_attention(q, k, v, kv, ks, decay, 1e-4)
    assert torch.equal(out[0], linear_attention_reference(q, k, v, kv, ks, decay, 1e-4)[0])
    backend.set_backend("triton")
    try:
        forced = linear_attention(q, k, v, kv, ks, decay, 1e-4)
        assert rel(forced[0], out[0]) < 1e-5
        q.requires_grad_(True)
        with pytest.raises(RuntimeError, match="gradients are needed"):
            linear_attention(q, k, v, kv, ks, decay, 1e-4)
    finally:
        backend.set_backend("auto")
    with pytest.raises(ValueError, match="unknown kernel backend"):
        backend.set_backend("cuda-magic")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_on_the_gpu(gen, dtype):
    q, k, v, kv, ks, decay = inputs(2, 12, 8160, 32, gen, device="cuda", dtype=dtype)
    poisoned = (torch.full_like(q, float("nan")), torch.full_like(kv, float("nan")), torch.full_like(ks, float("nan")))
    o, kv2, ks2 = linear_attention_triton(q, k, v, kv, ks, decay, 1e-4, outputs=poisoned)
    ro, rkv, rks = linear_attention_reference(q, k, v, kv, ks, decay, 1e-4)
    tol = 5e-3 if dtype == torch.float32 else 2e-2  # tf32 dots; bf16 outputs
    assert rel(o, ro) < tol and rel(kv2, rkv) < tol and rel(ks2, rks) < tol
    assert linear_attention(q, k, v, kv, ks, decay, 1e-4)[0].shape == o.shape  # auto takes the kernel


def test_the_cpu_path_needs_no_triton(tmp_path):
    """Triton is an extra: without it installed, the model's ops still run (the reference)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch\n"
            "from streamstyle.kernels.linear_attention import linear_attention\n"
            "q = torch.randn(1, 2, 5, 16)\n"
            "o, kv, ks = linear_attention(q, q, q, torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16), torch.full((2,), 0.5), 1e-4)\n"
            "print(tuple(o.shape))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "(1, 2, 5, 16)" in run.stdout, run.stderr
