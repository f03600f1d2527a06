"""The refiner's fused Triton stages against their PyTorch reference: odd sizes (1x1, sizes that are
not multiples of the tile, batches of two), several tiles, float32 and bfloat16, with and without the
per-image `cond`, outputs poisoned with NaN, both slot formats with crops (bytes past the frame
untouched), the public switch and its weight cache, the reference's own semantics and gradients,
and every refusal. On the CPU the kernels run under TRITON_INTERPRET=1 (conftest sets it); the
`gpu` tests run them at 1280x720 on CUDA, inside a CUDA graph too."""

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

from streamstyle.kernels import backend  # noqa: E402
from streamstyle.kernels.refiner import (conv3x3_mlp, conv3x3_mlp_reference, refine_composite,  # noqa: E402
                                         refine_composite_reference)
from streamstyle.kernels.refiner.triton_kernel import (conv3x3_mlp_triton, pack_conv3x3_mlp, pack_refine,  # noqa: E402
                                                       refine_composite_triton)
from streamstyle.kernels.writeback.triton_kernel import write_rgba_triton  # noqa: E402

NAN = float("nan")


def layer(c_in, c1, c_out, gen, cond_batch=None, device="cpu"):
    """w3, b3, cond, w1, b1 of one layer, scaled so that SiLU sees both signs and stage 2's
    residual stays small (the composite's clamp must not hide errors)."""
    w3 = torch.randn(c1, c_in, 3, 3, generator=gen) * (0.6 / c_in ** 0.5)
    b3 = torch.randn(c1, generator=gen) * 0.2
    cond = torch.randn(cond_batch, c1, generator=gen) * 0.5 if cond_batch else None
    w1 = torch.randn(c_out, c1, generator=gen) * ((0.15 if c_out == 4 else 1.0) / c1 ** 0.5)
    b1 = torch.randn(c_out, generator=gen) * 0.1
    return [t.to(device) if t is not None else None for t in (w3, b3, cond, w1, b1)]


def inputs(b, h, w, cin, gen, mask_ch=6, device="cpu"):
    """X [B, H, W, Cin]: features in [-1, 1] (colours among them), the mask channel in [0, 1]."""
    x = torch.rand(b, h, w, cin, generator=gen) * 2 - 1
    x[..., mask_ch] = torch.rand(b, h, w, generator=gen)
    return x.to(device)


def close(got, want, dtype):
    """float32: the kernel's summation order; 16-bit: one rounding of y (and, where the dots run
    in that dtype, of the hidden activation before the 1x1 layer), against a float32 oracle on the
    same inputs."""
    err = (got.float() - want.float()).abs().max().item()
    tol = 1e-5 if dtype == torch.float32 else 1.6e-2
    return err <= tol * max(1.0, want.abs().max().item()), err


# (B, H, W, Cin, C1, C2): a 1x1 image, sizes that are no multiple of any tile, a batch of two,
# channel counts that are not powers of two, and the model's 32 / 32 / 32
SIZES = [(1, 1, 1, 8, 8, 8), (2, 13, 7, 20, 24, 16), (1, 17, 33, 32, 32, 32), (2, 5, 9, 12, 40, 64)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_cond, act_out", [(True, True), (False, False)])
@pytest.mark.parametrize("b, h, w, cin, c1, c2", SIZES)
def test_stage1_matches_reference(gen, b, h, w, cin, c1, c2, dtype, with_cond, act_out):
    x = inputs(b, h, w, cin, gen)
    w3, b3, cond, w1, b1 = layer(cin, c1, c2, gen, b if with_cond else None)
    out = torch.full((b, h, w, c2), NAN, dtype=dtype)
    got = conv3x3_mlp_triton(x.to(dtype), pack_conv3x3_mlp(w3, b3, w1, b1, dtype), cond, act_out, out_y=out)
    want = conv3x3_mlp_reference(x.to(dtype).float(), w3, b3, cond, w1, b1, act_out)
    assert got is out and got.dtype == dtype and not torch.isnan(got).any()
    ok, err = close(got, want, dtype)
    assert ok, err
    assert want.abs().max() > 0.1  # not a vacuous near-zero output


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_cond", [True, False])
@pytest.mark.parametrize("b, h, w, cin, c1, cy", SIZES)
def test_stage2_matches_reference(gen, b, h, w, cin, c1, cy, dtype, with_cond):
    x = inputs(b, h, w, cin, gen)
    y = (torch.randn(b, h, w, cy, generator=gen)).to(dtype)
    w3, b3, cond, w1, b1 = layer(cy, c1, 4, gen, b if with_cond else None)
    out = torch.full((b, 3, h, w), NAN)
    got = refine_composite_triton(y, x.to(dtype), pack_refine(w3, b3, w1, b1, dtype), cond, 0, 3, 6, out_rgb=out)
    want = refine_composite_reference(y.float(), x.to(dtype).float(), w3, b3, cond, w1, b1, 0, 3, 6)
    assert got is out and not torch.isnan(got).any()
    assert (got - want).abs().max() < 2e-5
    inside = ((want > 0) & (want < 1)).float().mean()
    assert inside > 0.6  # most pixels are away from the clamp, where an error would show


@pytest.mark.parametrize("tile", [(1, 16), (4, 4), (2, 64), (16, 8)])
def test_every_tile_shape_gives_the_same_result(gen, tile):
    b, h, w, cin, c1 = 2, 9, 19, 16, 24
    x = inputs(b, h, w, cin, gen, mask_ch=cin - 1)
    s1 = layer(cin, c1, 16, gen, b)
    s2 = layer(16, c1, 4, gen, b)
    y = conv3x3_mlp_triton(x, pack_conv3x3_mlp(s1[0], s1[1], s1[3], s1[4], x.dtype), s1[2],
                           out_y=torch.full((b, h, w, 16), NAN), tile=tile)
    rgb = refine_composite_triton(y, x, pack_refine(s2[0], s2[1], s2[3], s2[4], x.dtype), s2[2], 5, 1, cin - 1,
                                  out_rgb=torch.full((b, 3, h, w), NAN), tile=tile)
    y_ref = conv3x3_mlp_reference(x, *s1)
    rgb_ref = refine_composite_reference(y_ref, x, *s2, 5, 1, cin - 1)
    assert (y - y_ref).abs().max() < 1e-5 and (rgb - rgb_ref).abs().max() < 2e-5


@pytest.mark.parametrize("fmt", ["rgba8", "rgba16f"])
@pytest.mark.parametrize("crop", [(0, 0), (2, 5)])
def test_the_slot_is_written_in_the_same_pass(gen, fmt, crop):
    """The slot's bytes equal the kernel's own planar output written by the write-back kernel,
    byte for byte, cropped to the frame (row pitch = the frame's width); every byte of the frame is
    written (the slot starts as 0xFF: NaN halves) and the bytes past it are untouched."""
    h, w, cin = 11, 21, 16
    x = inputs(1, h, w, cin, gen)
    y = torch.randn(1, h, w, 16, generator=gen)
    w3, b3, cond, w1, b1 = layer(16, 16, 4, gen, 1)
    packed = pack_refine(w3, b3, w1, b1, torch.float32)
    fw, fh = w - crop[1], h - crop[0]
    size = fw * fh * (4 if fmt == "rgba8" else 8)
    slot = torch.full((size + 40,), 0xFF, dtype=torch.uint8)
    want = slot.clone()
    rgb = refine_composite_triton(y, x, packed, cond, 0, 3, 6, fw, fh, slot, fmt, out_rgb=torch.full((1, 3, h, w), NAN))
    write_rgba_triton(rgb[0, :, :fh, :fw], want, fmt)
    assert torch.equal(slot, want) and bool((slot[size:] == 0xFF).all())
    assert not torch.isnan(rgb).any()
    # the reference path writes the same slot from its own rgb (a float32 ulp apart at most)
    ref_slot = torch.full_like(slot, 0xFF)
    refine_composite_reference(y, x, w3, b3, cond, w1, b1, 0, 3, 6, fw, fh, ref_slot, fmt)
    if fmt == "rgba8":
        assert (slot.int() - ref_slot.int()).abs().max() <= 1 and (slot == ref_slot).float().mean() > 0.99
    else:
        a, b = slot[:size].view(torch.float16).float(), ref_slot[:size].view(torch.float16).float()
        assert (a - b).abs().max() < 1e-3
    assert bool((ref_slot[size:] == 0xFF).all())


def test_the_model_sized_chain_through_the_switch_with_its_weight_cache(gen):
    """Cin = C1 = C2 = 32, both stages through the public functions: `auto` on the CPU runs the
    reference; `triton` runs the kernels, packs each layer's weights once into the caller's dict,
    and repacks when the weights change in place."""
    h, w = 10, 23
    x = inputs(1, h, w, 32, gen)
    s1 = layer(32, 32, 32, gen, 1)
    s2 = layer(32, 32, 4, gen, 1)
    slot_ref = torch.zeros(w * h * 4, dtype=torch.uint8)
    slot_fast = torch.zeros_like(slot_ref)
    with torch.no_grad():
        y_ref = conv3x3_mlp(x, *s1)
        rgb_ref = refine_composite(y_ref, x, *s2, 0, 3, 6, w, h, slot_ref, "rgba8")
        assert torch.equal(y_ref, conv3x3_mlp_reference(x, *s1))
        c1, c2 = {}, {}
        backend.set_backend("triton")
        try:
            y = conv3x3_mlp(x, *s1, cache=c1)
            rgb = refine_composite(y, x, *s2, 0, 3, 6, w, h, slot_fast, "rgba8", cache=c2)
            packed = c1["conv3x3_mlp"][1]
            conv3x3_mlp(x, *s1, cache=c1)
            assert c1["conv3x3_mlp"][1] is packed  # a look-up, not a repack
            s1[0].mul_(0.5)
            changed = conv3x3_mlp(x, *s1, cache=c1)
            assert c1["conv3x3_mlp"][1] is not packed
            s1[0].mul_(2.0)
            again = conv3x3_mlp(x, *s1, cache=c1)
            assert "refine_composite" in c2
        finally:
            backend.set_backend("auto")
    assert (y - y_ref).abs().max() < 1e-5 and (rgb - rgb_ref).abs().max() < 2e-5
    assert not torch.allclose(changed, y, atol=1e-3) and (again - y).abs().max() < 1e-6
    assert (slot_fast.int() - slot_ref.int()).abs().max() <= 1


def colour_case(b, h, w, gen, device="cpu"):
    """Object colours as the model hands them over: the ids one component of an int32 plane (full
    32-bit range: the low 8 bits pick the row), one table expanded over the batch (stride 0)."""
    plane = torch.randint(-2 ** 31, 2 ** 31 - 1, (b, h, w, 2), generator=gen, dtype=torch.int64).to(torch.int32)
    table = (torch.rand(1, 256, 3, generator=gen) * 0.6 - 0.3).expand(b, -1, -1)
    return plane.to(device)[..., 1], table.to(device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("b, h, w, cin, c1, cy", SIZES[1:3])
def test_stage2_with_object_colours_matches_reference(gen, b, h, w, cin, c1, cy, dtype):
    """Each pixel's fresh colour gets its object's row of the image's table, as the reference
    adds it; the colours move the frame (so an unread table would show)."""
    x = inputs(b, h, w, cin, gen)
    y = (torch.randn(b, h, w, cy, generator=gen)).to(dtype)
    w3, b3, cond, w1, b1 = layer(cy, c1, 4, gen, b)
    ids, colours = colour_case(b, h, w, gen)
    packed = pack_refine(w3, b3, w1, b1, dtype)
    got = refine_composite_triton(y, x.to(dtype), packed, cond, 0, 3, 6, out_rgb=torch.full((b, 3, h, w), NAN),
                                  ids=ids, colours=colours)
    want = refine_composite_reference(y.float(), x.to(dtype).float(), w3, b3, cond, w1, b1, 0, 3, 6,
                                      ids=ids, colours=colours)
    plain = refine_composite_reference(y.float(), x.to(dtype).float(), w3, b3, cond, w1, b1, 0, 3, 6)
    assert not torch.isnan(got).any() and (got - want).abs().max() < 2e-5
    assert (want - plain).abs().max() > 0.1


def test_the_reference_composite_means_what_the_spec_says(gen):
    """With the refiner's residual and logit known (zero conv weights, chosen biases): a zero mask
    keeps base + residual, a mask of one with a large logit takes the history, and a half logit
    blends halfway; values out of range are clamped."""
    h, w, cin = 3, 4, 8
    x = inputs(1, h, w, cin, gen)
    y = torch.randn(1, h, w, 8, generator=gen)
    w3, b3, w1 = torch.zeros(8, 8, 3, 3), torch.zeros(8), torch.zeros(4, 8)
    base, hist = (x[..., 0:3] + 1) / 2, (x[..., 3:6] + 1) / 2

    def run(res, logit, mask):
        x[..., 6] = mask
        b1 = torch.tensor([res, res, res, logit])
        return refine_composite_reference(y, x, w3, b3, None, w1, b1, 0, 3, 6)[0].permute(1, 2, 0)

    assert torch.allclose(run(0.05, 30.0, 0.0), (base + 0.05).clamp(0, 1))
    assert torch.allclose(run(0.05, 30.0, 1.0), hist, atol=1e-6)
    assert torch.allclose(run(0.0, 0.0, 1.0), (base + hist) / 2, atol=1e-6)
    assert torch.equal(run(5.0, -30.0, 1.0), torch.ones(h, w, 3))
    ids, colours = colour_case(1, h, w, gen)  # an object's colour adds to the fresh colour
    x[..., 6] = 0.0
    got = refine_composite_reference(y, x, w3, b3, None, w1, torch.zeros(4), 0, 3, 6, ids=ids, colours=colours)
    assert torch.allclose(got[0].permute(1, 2, 0), (base + colours[0][ids[0].long() & 255]).clamp(0, 1))


def test_the_reference_is_differentiable(gen):
    """Training runs the reference under autograd: gradients of both stages (and of the object
    colours) match finite differences."""
    x = inputs(1, 3, 4, 8, gen).double().requires_grad_()
    s1 = [t.double().requires_grad_() for t in layer(8, 8, 8, gen, 1)]
    s2 = [t.double().requires_grad_() for t in layer(8, 8, 4, gen, 1)]

    ids, colours = colour_case(1, 3, 4, gen)
    colours = colours.double().contiguous().requires_grad_()

    def chain(x, colours, *p):
        y = conv3x3_mlp_reference(x, *p[:5])
        return refine_composite_reference(y, x, *p[5:], 0, 3, 6, ids=ids, colours=colours)

    assert torch.autograd.gradcheck(chain, (x, colours, *s1, *s2), fast_mode=True)


def test_bad_inputs_are_refused_before_any_work(gen):
    h, w = 4, 5
    x = inputs(1, h, w, 8, gen)
    y = torch.randn(1, h, w, 8, generator=gen)
    s1 = layer(8, 8, 8, gen, 1)
    s2 = layer(8, 8, 4, gen, 1)
    slot = torch.full((w * h * 8,), 0xAB, dtype=torch.uint8)
    out_rgb = torch.full((1, 3, h, w), 7.0)
    w3, b3, cond, w1, b1 = s2
    ids, colours = colour_case(1, h, w, gen)
    cases = [
        (lambda: conv3x3_mlp(x[0], *s1), "channels-last"),
        (lambda: conv3x3_mlp(x.double(), *s1), "float32, bfloat16 or float16"),
        (lambda: conv3x3_mlp(x, s1[0][:, :7], *s1[1:]), "w3 must be"),
        (lambda: conv3x3_mlp(x, s1[0], s1[1], torch.zeros(2, 8), *s1[3:]), "cond must be"),
        (lambda: conv3x3_mlp(x, *s1[:3], s1[3][:, :5], s1[4]), "w1 must be"),
        (lambda: conv3x3_mlp(x, *s1, out_y=torch.empty(1, h, w, 8, dtype=torch.bfloat16)), "out_y must be"),
        (lambda: refine_composite(y, x, w3, b3, cond, w1[:3], b1[:3], 0, 3, 6), r"w1 must be \[4, 8\]"),
        (lambda: refine_composite(y[:, :3], x, *s2, 0, 3, 6), "same pixels"),
        (lambda: refine_composite(y, x, *s2, 6, 3, 6), "base_ch 6"),
        (lambda: refine_composite(y, x, *s2, 0, 3, 8), "mask_ch 8"),
        (lambda: refine_composite(y, x, *s2, 0, True, 6), "hist_ch True"),
        (lambda: refine_composite(y, x, *s2, 0, 3, 6, w, h, slot), "both `out` and `fmt`"),
        (lambda: refine_composite(y, x, *s2, 0, 3, 6, w + 1, h, slot, "rgba8"), "does not fit"),
        (lambda: refine_composite(y, x, *s2, 0, 3, 6, w, h, slot[:50], "rgba8"), "needs 80"),
        (lambda: refine_composite(y, x, *s2, 0, 3, 6, w, h, slot, "bgra8"), "output format"),
        (lambda: refine_composite(y.expand(2, -1, -1, -1), x.expand(2, -1, -1, -1), w3, b3, None, w1, b1,
                                  0, 3, 6, w, h, slot, "rgba8"), "one frame"),
        (lambda: refine_composite(y, x, *s2, 0, 3, 6, out_rgb=torch.empty(1, h, w, 3)), "out_rgb must be"),
        (lambda: refine_composite(y, x, *s2, 0, 3, 6, ids=ids), "both `ids` and `colours`"),
        (lambda: refine_composite(y, x, *s2, 0, 3, 6, ids=ids[:, :2], colours=colours), "ids must be"),
        (lambda: refine_composite(y, x, *s2, 0, 3, 6, ids=ids.float(), colours=colours), "ids must be an integer"),
        (lambda: refine_composite(y, x, *s2, 0, 3, 6, ids=ids, colours=colours[:, :100]), r"colours must be \[1, 256, 3\]"),
        (lambda: refine_composite(y, x, *s2, 0, 3, 6, ids=ids, colours=colours.int()), "colours must be a float"),
    ]
    for name in ("auto", "triton"):
        backend.set_backend(name)
        try:
            for call, match in cases:
                with pytest.raises(ValueError, match=match):
                    call()
        finally:
            backend.set_backend("auto")
    assert bool((slot == 0xAB).all()) and bool((out_rgb == 7.0).all())


def test_the_kernels_refuse_what_they_cannot_take(gen):
    x = inputs(1, 4, 5, 8, gen)
    s1 = layer(8, 8, 8, gen)
    packed = pack_conv3x3_mlp(s1[0], s1[1], s1[3], s1[4], torch.float32)
    with pytest.raises(ValueError, match="packed for 8 channels of torch.float32"):
        conv3x3_mlp_triton(x.half(), packed, None)
    with pytest.raises(ValueError, match="contiguous"):
        conv3x3_mlp_triton(x.transpose(1, 2), packed, None)
    with pytest.raises(ValueError, match="powers of two"):
        conv3x3_mlp_triton(x, packed, None, tile=(3, 8))
    backend.set_backend("triton")
    try:
        with pytest.raises(RuntimeError, match="not contiguous"):
            conv3x3_mlp(x.transpose(1, 2), *s1)
        with pytest.raises(RuntimeError, match="at most 64"):
            conv3x3_mlp(x, *layer(8, 72, 8, gen))
        with pytest.raises(RuntimeError, match="gradients"):
            conv3x3_mlp(x.requires_grad_(), *s1)
    finally:
        backend.set_backend("auto")


# Compiles both kernels as the service launches them (bf16, 32 channels, the default tile) for an
# H100/H200 (sm_90) with the installed Triton, in a process without the interpreter; no GPU needed.
AOT = r"""
import json, os, re, subprocess, sys, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from streamstyle.kernels.refiner import triton_kernel as tk

# The resource usage of the cubin Triton built (its own ptxas ran), read by the cuobjdump it ships:
# the bundled `ptxas` need not take the PTX version a newer Triton emits.
cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
ptr = dict.fromkeys(("w3_ptr", "b3_ptr", "cond_ptr", "w1_ptr", "b1_ptr"), "*fp32")
i32 = lambda *names: dict.fromkeys(names, "i32")
cases = {
    "conv3x3_mlp": (tk._conv3x3_mlp_kernel,
                    {"x_ptr": "*bf16", **ptr, "w3_ptr": "*bf16", "cond_ptr": "*bf16", "w1_ptr": "*bf16", "y_ptr": "*bf16",
                     **i32("H", "W", "CIN", "C2")},
                    {"CINP": 32, "C1": 32, "C1P": 32, "C2P": 32, "HAS_COND": True, "ACT_OUT": True}),
    "refine_composite": (tk._refine_kernel,
                         {"y_ptr": "*bf16", "x_ptr": "*bf16", **ptr, "w3_ptr": "*bf16", "cond_ptr": "*bf16",
                          "rgb_ptr": "*fp32", "slot_ptr": "*u8", "ids_ptr": "*i32", "col_ptr": "*fp32",
                          **i32("H", "W", "CY", "CIN", "base_ch", "hist_ch", "mask_ch", "OH", "OW",
                                "si_b", "si_h", "si_w", "sc_b", "sc_r", "sc_c")},
                         {"CYP": 32, "C1": 32, "C1P": 32, "HAS_COND": True, "HAS_COLOURS": True, "ID_MASK": 255,
                          "SLOT": tk.SLOT_RGBA8}),
}
out = {}
for name, (fn, sig, const) in cases.items():
    const = {**const, "TILE_H": tk.TILE_H, "TILE_W": tk.TILE_W}
    sig = {**sig, **dict.fromkeys(const, "constexpr")}
    k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const), target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": tk.NUM_WARPS})
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin", delete=False) as f:
        f.write(k.asm["cubin"])
    usage = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True,
                           check=True).stdout
    os.unlink(f.name)
    out[name] = {"cubin": len(k.asm["cubin"]), "mma": "mma" in k.asm["ptx"],
                 "regs": int(re.search(r"REG:(\d+)", usage).group(1)),
                 "spill_bytes": int(re.search(r"LOCAL:(\d+)", usage).group(1))}  # spills go to local memory
print(json.dumps(out))
"""


def test_the_kernels_compile_for_hopper_without_spilling():
    """The interpreter accepts code the compiler rejects: compile both kernels for sm_90 (what
    the GPU machine runs), products on the tensor cores, no register spills at the default tile."""
    import triton

    if not os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")):
        pytest.skip("this Triton ships no cuobjdump")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", AOT], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    for name, k in got.items():
        assert k["cubin"] > 0 and k["mma"], (name, k)
        assert k["spill_bytes"] == 0, (name, k)


def _gpu_case(gen, h=720, w=1280):
    x = inputs(1, h, w, 32, gen).bfloat16().cuda()
    s1 = [t.bfloat16().cuda() for t in layer(32, 32, 32, gen, 1)]
    s2 = [t.bfloat16().cuda() for t in layer(32, 32, 4, gen, 1)]
    return x, s1, s2


@pytest.mark.gpu
def test_kernels_match_reference_on_the_gpu(gen):
    """bf16 at 1280x720, as the service runs it; the oracle is the float32 reference on the same
    bf16 inputs and weights, so only the kernels' own error counts."""
    x, s1, s2 = _gpu_case(gen)
    c1, c2 = {}, {}
    with torch.no_grad():
        y = conv3x3_mlp(x, *s1, out_y=torch.full((1, 720, 1280, 32), NAN, dtype=torch.bfloat16, device="cuda"),
                        cache=c1)
        y_want = conv3x3_mlp_reference(x.float(), *[t.float() for t in s1])
        assert "conv3x3_mlp" in c1 and not torch.isnan(y).any()  # the kernel ran, every value written
        ok, err = close(y, y_want, torch.bfloat16)
        assert ok, err
        slot = torch.full((1280 * 720 * 8 + 64,), 0xFF, dtype=torch.uint8, device="cuda")
        ids, colours = colour_case(1, 720, 1280, gen, device="cuda")
        rgb = refine_composite(y, x, *s2, 0, 3, 6, 1277, 719, slot, "rgba16f",
                               out_rgb=torch.full((1, 3, 720, 1280), NAN, device="cuda"), cache=c2,
                               ids=ids, colours=colours)
        rgb_want = refine_composite_reference(y.float(), x.float(), *[t.float() for t in s2], 0, 3, 6,
                                              ids=ids, colours=colours)
    assert "refine_composite" in c2 and not torch.isnan(rgb).any()
    assert (rgb - rgb_want).abs().max() < 1e-2 and (rgb - rgb_want).abs().mean() < 1e-3
    want = torch.full_like(slot, 0xFF)
    write_rgba_triton(rgb[0, :, :719, :1277], want, "rgba16f")
    assert torch.equal(slot, want)


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", ["rgba8", "rgba16f"])
def test_both_stages_replay_in_a_cuda_graph(gen, fmt):
    """Captured once with their outputs passed in (no allocation inside), replayed on new inputs:
    the replay equals an eager run on those inputs, byte for byte."""
    x, s1, s2 = _gpu_case(gen)
    c1, c2 = {}, {}
    y = torch.empty(1, 720, 1280, 32, dtype=torch.bfloat16, device="cuda")
    rgb = torch.empty(1, 3, 720, 1280, device="cuda")
    slot = torch.zeros(1280 * 720 * 8, dtype=torch.uint8, device="cuda")

    def frame():
        conv3x3_mlp(x, *s1, out_y=y, cache=c1)
        refine_composite(y, x, *s2, 0, 3, 6, 1280, 720, slot, fmt, out_rgb=rgb, cache=c2)

    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            frame()  # packs the weights outside the capture
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            frame()
        x.copy_(inputs(1, 720, 1280, 32, gen).bfloat16().cuda())
        graph.replay()
        torch.cuda.synchronize()
        got_rgb, got_slot = rgb.clone(), slot.clone()
        frame()
    assert torch.equal(got_rgb, rgb) and torch.equal(got_slot, slot)
