"""The refiner's input assembly (kernels/refiner_features): the fused Triton kernel against its
PyTorch reference at odd and padded sizes, latent strides 2, 4 and 8, one-texel latents, batches of
two, ids and surface present and absent, guide / ids / surface taken as strided views (as the slot
and the packed planes hand them over), float32, bfloat16 and float16, outputs poisoned with NaN;
the reference's own meaning and gradients; the switch; every refusal; the model's channel order;
and the frame function's output with the kernel on and off. On the CPU the kernel runs under
TRITON_INTERPRET=1 (conftest sets it); the `gpu` tests run it at 1280x720 bf16, in a CUDA graph too,
and the default model's frame on and off."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

import streamstyle.model.refiner as refiner_module  # noqa: E402
from streamstyle.kernels import backend  # noqa: E402
from streamstyle.kernels.refiner_features import (ID_BUCKETS, feature_channels, refiner_features,  # noqa: E402
                                                  refiner_features_reference)
from streamstyle.kernels.refiner_features.triton_kernel import refiner_features_triton  # noqa: E402

NAN = float("nan")
MANTISSA = {torch.float32: 23, torch.bfloat16: 7, torch.float16: 10}
GROUPS = ("base", "guide", "hist", "mask", "position", "ids", "surface")


def case(b, hh, ww, stride, cg, e, f, gen, *, ids=True, surface=True, wdtype=torch.float32, binary_mask=False,
         contiguous_surface=False, device="cpu"):
    """The op's arguments as the frame hands them over: the guide a channel range of the packed
    planes, ids one component of an int32 plane (full 32-bit range: the low 8 bits pick the row),
    the surface three of an RGBA16F plane's four components."""
    def dev(t):
        return t.to(device)

    latent = dev(torch.rand(b, 3, hh // stride, ww // stride, generator=gen) * 2 - 1)
    packed = dev(torch.randn(b, cg + 3, hh, ww, generator=gen))
    history = dev(torch.rand(b, 3, hh, ww, generator=gen))
    mask = dev(torch.rand(b, 1, hh, ww, generator=gen))
    if binary_mask:
        mask = (mask > 0.4).float()
    plane = dev(torch.randint(-2 ** 31, 2 ** 31 - 1, (b, hh, ww, 2), generator=gen, dtype=torch.int64).to(torch.int32))
    rgba = dev((torch.randn(b, hh, ww, 4, generator=gen) * 1.5).half())
    table = dev((torch.randn(ID_BUCKETS, e, generator=gen) * 0.5).to(wdtype)) if e else None
    weight = dev((torch.randn(f, 3, generator=gen) * 3).to(wdtype)) if f else None
    bias = dev(torch.rand(f, generator=gen).to(wdtype)) if f else None
    srf = rgba[..., :3]  # the views are taken on the device: `.to()` of a view would make it contiguous
    if contiguous_surface:
        srf = srf.contiguous()
    return dict(latent=latent, guide=packed[:, 2:2 + cg], history=history, mask=mask,
                ids=plane[..., 1] if ids else None, surface=srf if surface else None,
                id_table=table, surface_weight=weight, surface_bias=bias)


def call(fn, a, stride, width, height, dtype, **kw):
    return fn(a["latent"], a["guide"], a["history"], a["mask"], a["ids"], a["surface"], a["id_table"],
              a["surface_weight"], a["surface_bias"], stride, width, height, dtype, **kw)


def ulps(got, want, dtype):
    """|got - want| in units of `dtype`'s last place at want's magnitude."""
    tiny = torch.finfo(dtype).tiny
    unit = torch.exp2(torch.floor(torch.log2(want.float().abs().clamp_min(tiny))) - MANTISSA[dtype])
    return (got.float() - want.float()).abs() / unit


def assert_matches(got, want, dtype, lay, surface_share=0.999):
    """The kernel reproduces the reference's roundings: guide, history, mask, positions and ids
    bit for bit; the upsample within 1 unit in the last place (float32: 2 units of 1, where ATen's
    CPU kernel sums in another order); the surface features within 1 unit (float32: 1e-4, a phase of
    a few hundred radians has ulps of 3e-5) except at a rare bf16 step of the Linear's rounded
    output, where the reference's summation order is not ours."""
    assert got.shape == want.shape and got.dtype == want.dtype == dtype and not torch.isnan(got).any()
    bounds = dict(zip(GROUPS, zip(lay[:7], list(lay[1:7]) + [lay.total])))
    for name in ("guide", "hist", "mask", "position", "ids"):
        a, b = bounds[name]
        assert torch.equal(got[..., a:b], want[..., a:b]), (name, (got[..., a:b].float() - want[..., a:b].float()).abs().max())
    a, b = bounds["base"]
    if dtype == torch.float32:  # latents in [-1, 1]: 2 float32 ulps of 1, whatever the cancellation
        assert (got[..., a:b] - want[..., a:b]).abs().max() <= 2 ** -22
    else:
        assert ulps(got[..., a:b], want[..., a:b], dtype).max() <= 1
    a, b = bounds["surface"]
    if b > a:
        if dtype == torch.float32:
            assert (got[..., a:b] - want[..., a:b]).abs().max() <= 1e-4
        else:
            within = (ulps(got[..., a:b], want[..., a:b], dtype) <= 1).float().mean().item()
            assert within >= surface_share, within


# (B, H, W, stride, width, height, Cg, E, F): one latent texel (both bilinear neighbours clamp), a
# padded frame of two images whose pixel count is no multiple of the block, strides 2 and 8, a
# guide of one channel, tables and Linears of odd widths, neither of them, the model's own 10/3/4
SIZES = [(1, 4, 4, 4, 4, 4, 10, 3, 4), (2, 12, 20, 4, 17, 9, 10, 3, 4), (1, 6, 10, 2, 10, 5, 4, 2, 1),
         (1, 16, 8, 8, 8, 13, 7, 5, 3), (2, 8, 12, 4, 11, 8, 1, 0, 0)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_ids, with_surface", [(True, True), (False, False), (True, False)])
@pytest.mark.parametrize("b, hh, ww, stride, width, height, cg, e, f", SIZES)
def test_kernel_matches_reference(gen, b, hh, ww, stride, width, height, cg, e, f, dtype, with_ids, with_surface):
    a = case(b, hh, ww, stride, cg, e, f, gen, ids=with_ids, surface=with_surface, wdtype=dtype)
    lay = feature_channels(cg, e, f)
    out = torch.full((b, hh, ww, lay.total), NAN, dtype=dtype)
    got = call(refiner_features_triton, a, stride, width, height, dtype, out=out)
    want = call(refiner_features_reference, a, stride, width, height, dtype)
    assert got is out
    assert_matches(got, want, dtype, lay)
    if e and not with_ids:
        assert not got[..., lay.ids:lay.surface].any()  # written, as zeros
    if f and with_surface:
        assert got[..., lay.surface:].float().std() > 0.3  # the features vary: a phase error would show


def test_float16_activations_and_mixed_dtypes(gen):
    """float16 activations and weights; and bf16 activations with float32 weights (each table
    value and Linear output rounded once to bf16, as `.to()` does). The float16 surface is
    contiguous: on the CPU, ATen's float16 Linear sums a strided input in float16 (another
    rounding than its contiguous path, which the kernel follows)."""
    for dtype, wdtype in ((torch.float16, torch.float16), (torch.bfloat16, torch.float32)):
        a = case(2, 12, 20, 4, 10, 3, 4, gen, wdtype=wdtype, contiguous_surface=True)
        lay = feature_channels(10, 3, 4)
        got = call(refiner_features_triton, a, 4, 19, 11, dtype,
                   out=torch.full((2, 12, 20, lay.total), NAN, dtype=dtype))
        assert_matches(got, call(refiner_features_reference, a, 4, 19, 11, dtype), dtype, lay)


@pytest.mark.parametrize("block", [16, 32, 256])
def test_every_block_size_gives_the_same_result(gen, block):
    a = case(2, 12, 20, 4, 10, 3, 4, gen, wdtype=torch.bfloat16)
    want = call(refiner_features_triton, a, 4, 18, 10, torch.bfloat16)
    got = call(refiner_features_triton, a, 4, 18, 10, torch.bfloat16, block=block)
    assert torch.equal(got, want)


def test_ids_are_embedded_by_their_low_8_bits_whatever_their_integer_type(gen):
    a = case(1, 8, 12, 4, 10, 3, 0, gen)
    small = a["ids"] & 255
    want = call(refiner_features_triton, a, 4, 12, 8, torch.float32)
    for ids in (small.to(torch.uint8), small.to(torch.int16) - 256 * 3, a["ids"].to(torch.int64) + 2 ** 40):
        got = call(refiner_features_triton, {**a, "ids": ids}, 4, 12, 8, torch.float32)
        assert torch.equal(got, want)


def test_the_reference_means_what_its_docstring_says(gen):
    """Positions, the masked history, the id rows and the Fourier features at known values; a
    constant latent upsamples to itself."""
    b, hh, ww, s, width, height = 1, 8, 12, 4, 10, 7
    a = case(b, hh, ww, s, 10, 3, 2, gen, binary_mask=True)
    a["latent"] = torch.full_like(a["latent"], 0.375)
    lay = feature_channels(10, 3, 2)
    x = call(refiner_features_reference, a, s, width, height, torch.float32)[0]  # [H, W, Cin]
    assert torch.equal(x[..., 0:3], torch.full((hh, ww, 3), 0.375))
    assert torch.equal(x[..., lay.guide:lay.hist], a["guide"][0].permute(1, 2, 0))
    m = a["mask"][0, 0]
    assert torch.allclose(x[..., lay.hist:lay.mask], (a["history"][0].permute(1, 2, 0) * 2 - 1) * m[..., None])
    assert torch.equal(x[..., lay.mask], m)
    p = lay.position
    assert torch.equal(x[0, :8, p], torch.tensor([-0.75, -0.25, 0.25, 0.75] * 2))  # inside the latent pixel
    assert torch.equal(x[:4, 0, p + 1], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    assert math.isclose(x[0, 0, p + 2].item(), 1 / width - 1, rel_tol=1e-6)  # the real frame's edges
    assert math.isclose(x[0, width - 1, p + 2].item(), 1 - 1 / width, abs_tol=1e-6)
    assert x[0, ww - 1, p + 2] > 1 and math.isclose(x[height - 1, 0, p + 3].item(), 1 - 1 / height, abs_tol=1e-6)
    assert torch.equal(x[..., lay.ids:lay.surface], a["id_table"][a["ids"][0].long() & 255])
    phase = 2 * math.pi * (a["surface"][0].float() @ a["surface_weight"].t() + a["surface_bias"])
    assert torch.allclose(x[..., lay.surface:lay.surface + 2], torch.sin(phase), atol=1e-4)
    assert torch.allclose(x[..., lay.surface + 2:], torch.cos(phase), atol=1e-4)


def test_the_surface_phase_is_float32_whatever_the_dtype(gen):
    """Surface positions tens of units from the origin under the model's weight scale put the phase
    at hundreds of cycles, where a bf16 step is a cycle or more: both backends take the Linear in
    float32 (bf16 weights read exactly), so bf16 features are the float32 ones rounded once."""
    a = case(1, 8, 12, 4, 10, 0, 4, gen, wdtype=torch.bfloat16, ids=False, contiguous_surface=True)
    a["surface"] = (a["surface"].float() * 20).half()
    lay = feature_channels(10, 0, 4)
    want = call(refiner_features_reference, a, 4, 12, 8, torch.float32)[..., lay.surface:]
    turns = 2 * math.pi * (a["surface"].float() @ a["surface_weight"].float().t())
    assert turns.abs().max() > 200 * 2 * math.pi  # the regime where a bf16 phase is noise
    for fn in (refiner_features_reference, refiner_features_triton):
        got = call(fn, a, 4, 12, 8, torch.bfloat16)[..., lay.surface:]
        assert (ulps(got, want.to(torch.bfloat16), torch.bfloat16) <= 1).float().mean() >= 0.999, fn


def test_the_model_keeps_its_channel_order():
    """The shipped weights were trained on this order (conv1's input channels): base 3, guide,
    history 3, mask, positions 4, ids E, sin F, cos F."""
    from streamstyle.model.config import preset
    from streamstyle.model.refiner import Refiner

    for name in ("tiny", "default"):
        cfg = preset(name)
        r = Refiner(cfg)
        guide = r.conv1.in_channels - 3 - 3 - 1 - 4 - cfg.id_features - 2 * cfg.surface_features
        assert (r.base_ch, r.guide_ch, r.hist_ch, r.mask_ch) == (0, 3, 3 + guide, 6 + guide)
        assert r.channels == feature_channels(guide, cfg.id_features, cfg.surface_features)
        assert r.channels.surface == r.in_channels - 2 * cfg.surface_features
    assert feature_channels(10, 3, 4).total == 32  # the default model's 32 input channels


def test_the_reference_is_differentiable(gen):
    """Training runs the reference under autograd: gradients reach the latent, the guide, the
    history, the mask, the id table and the surface Linear, and match finite differences (the
    Linear's to float32 precision with a wider step: the spec takes sin and cos in float32)."""
    a = case(1, 4, 8, 4, 2, 2, 2, gen)
    a = {k: (v.double() if v is not None and v.is_floating_point() else v) for k, v in a.items()}

    def check(names, **tol):
        def fn(*ts):
            return call(refiner_features_reference, {**a, **dict(zip(names, ts))}, 4, 8, 4, torch.float64)

        return torch.autograd.gradcheck(fn, tuple(a[n].clone().requires_grad_() for n in names), **tol)

    assert check(("latent", "guide", "history", "mask", "id_table"), fast_mode=True)
    assert check(("surface_weight", "surface_bias"), eps=1e-3, atol=5e-2, rtol=1e-2)


def test_the_switch_uses_the_kernel_only_where_asked(gen):
    a = case(1, 8, 12, 4, 10, 3, 4, gen)
    lay = feature_channels(10, 3, 4)
    ref = call(refiner_features, a, 4, 12, 8, torch.float32)  # auto on the CPU: the reference
    assert torch.equal(ref, call(refiner_features_reference, a, 4, 12, 8, torch.float32))
    backend.set_backend("triton")
    try:
        out = torch.full((1, 8, 12, lay.total), NAN)
        fast = call(refiner_features, a, 4, 12, 8, torch.float32, out=out)
        assert fast is out
        assert_matches(fast, ref, torch.float32, lay)
        a["id_table"].requires_grad_()
        with pytest.raises(RuntimeError, match="gradients are needed"):
            call(refiner_features, a, 4, 12, 8, torch.float32)
        wide = case(1, 8, 12, 4, 50, 3, 4, gen)  # 72 channels
        with pytest.raises(RuntimeError, match="at most 64"):
            call(refiner_features, wide, 4, 12, 8, torch.float32)
    finally:
        backend.set_backend("auto")
    x = call(refiner_features, a, 4, 12, 8, torch.float32)  # auto with gradients: the reference
    x.sum().backward()
    assert a["id_table"].grad is not None and a["id_table"].grad.abs().sum() > 0


def test_bad_inputs_are_refused_before_any_work(gen):
    a = case(1, 8, 12, 4, 10, 3, 4, gen)
    lay = feature_channels(10, 3, 4)
    out = torch.full((1, 8, 12, lay.total), 7.0)
    f32 = torch.float32
    bad = [
        ({"latent": a["latent"][:, :2]}, {}, r"latent must be \[1, 3, 2, 3\]"),
        ({"latent": a["latent"][..., :2]}, {}, "latent must be"),
        ({"guide": a["guide"][..., :10]}, {}, "not a multiple of the latent stride"),
        ({"guide": a["guide"][0]}, {}, "non-empty"),
        ({"history": a["history"][:, :1]}, {}, "history must be"),
        ({"mask": a["mask"][..., :5]}, {}, "mask must be"),
        ({"ids": a["ids"].float()}, {}, "ids must be an integer"),
        ({"ids": a["ids"][:, :4]}, {}, "ids must be"),
        ({"surface": a["surface"][..., :2]}, {}, "surface must be"),
        ({"surface": a["surface"].to(torch.int32)}, {}, "surface must be a float"),
        ({"id_table": a["id_table"][:100]}, {}, r"id_table must be \[256, E\]"),
        ({"surface_bias": None}, {}, "both surface_weight and surface_bias"),
        ({"surface_weight": a["surface_weight"][:, :2]}, {}, r"surface_weight must be \[F, 3\]"),
        ({"surface_bias": a["surface_bias"].half()}, {}, "one Linear has one dtype"),
        ({}, {"stride": 3}, "not a multiple of the latent stride 3"),
        ({}, {"stride": 0}, "stride must be a positive int"),
        ({}, {"width": 13}, "does not fit the 12x8 guide"),
        ({}, {"height": True}, "height must be a positive int"),
        ({}, {"dtype": torch.float64}, "dtype must be"),
        ({}, {"out": torch.empty(1, 8, 12, lay.total, dtype=torch.bfloat16)}, "out must be a contiguous"),
        ({}, {"out": torch.empty(1, 12, 8, lay.total).transpose(1, 2)}, r"\(not contiguous\)"),
    ]
    for name in ("auto", "triton"):
        backend.set_backend(name)
        try:
            for change, opts, match in bad:
                kw = {"stride": 4, "width": 12, "height": 8, "dtype": f32, "out": out, **opts}
                with pytest.raises(ValueError, match=match):
                    call(refiner_features, {**a, **change}, kw.pop("stride"), kw.pop("width"), kw.pop("height"),
                         kw.pop("dtype"), **kw)
        finally:
            backend.set_backend("auto")
    assert bool((out == 7.0).all())


def test_the_model_assembles_with_the_kernel_as_with_the_reference(tiny_model, gen):
    """`Refiner.features` of the tiny model, float32 and bfloat16: kernel and reference agree, and
    the output is in the refiner's dtype whatever the guide's (the frame passes the packed float32
    guide)."""
    import copy

    cfg = tiny_model.config
    guide = sum(3 if n != "depth" else 1 for n in cfg.guide_channels)
    for dtype in (torch.float32, torch.bfloat16):
        r = copy.deepcopy(tiny_model.refiner).to(dtype)
        a = case(1, 16, 24, cfg.latent_stride, guide, 0, 0, gen)
        ids, surface = a["ids"], a["surface"]
        args = (a["latent"], a["guide"], a["history"], (a["mask"] > 0.5).float(), ids, surface, 21, 13)
        with torch.no_grad():
            want = r.features(*args)
            backend.set_backend("triton")
            try:
                got = r.features(*args)
            finally:
                backend.set_backend("auto")
        assert want.dtype == got.dtype == dtype and want.shape[-1] == r.in_channels
        assert_matches(got, want, dtype, r.channels)


def test_the_guide_is_the_packed_planes_own_channels(tiny_model, frame_factory):
    """prepare_frame hands the refiner a view of the packed planes (one run of channels: no copy);
    its values are the guide channels' packed values, in the config's order."""
    from streamstyle.kernels.gbuffer_pack import pack_gbuffers
    from streamstyle.model.frame import prepare_frame
    from streamstyle.model.layout import pack_specs, reference_layout

    cfg = tiny_model.config
    w, h = 40, 24
    layout = reference_layout(w, h)
    planes = {k: v.unsqueeze(0) for k, v in frame_factory(w, h, layout).items()}
    inputs = prepare_frame(cfg, layout, planes, w, h)
    names = list(cfg.cond_channels) + [n for n in cfg.guide_channels if n not in cfg.cond_channels]
    specs = pack_specs(layout, names)
    full, _ = pack_gbuffers([planes[n] for n in names], specs, cfg.latent_stride)
    at, parts = 0, {}
    for n, spec in zip(names, specs):
        parts[n] = full[:, at:at + spec.count]
        at += spec.count
    assert torch.equal(inputs.guide, torch.cat([parts[n] for n in cfg.guide_channels], dim=1))
    packed = inputs.guide._base  # a channel range of the packed planes, not a copy
    assert packed is not None and packed.shape[1] > inputs.guide.shape[1]


def test_the_frame_is_the_same_with_the_kernel_on_and_off(gen, monkeypatch):
    """Two frames of the tiny model through the service's step (`Stylizer.step`, the frame
    function), 37x21 padded to 40x24, a layout with ids and a surface channel, every op on its
    Triton kernel (the interpreter): with the input assembly's kernel, and with its reference in
    its place. The frames agree to float32 rounding, history included (frame 2 reads frame 1)."""
    from streamstyle.model.config import preset
    from streamstyle.model.frame import FrameParams
    from streamstyle.model.layout import reference_layout
    from streamstyle.model.network import StreamStyleModel
    from streamstyle.model.stylizer import Stylizer
    from streamstyle.tools.bench import random_slot

    from .conftest import perturb

    model = perturb(StreamStyleModel(preset("tiny")), gen).eval()
    w, h = 37, 21
    layout = reference_layout(w, h, surface=True)
    slots = [random_slot(layout, w, h, "cpu", gen) for _ in range(2)]

    def frames():
        sty = Stylizer(model)
        s = sty.open_session(w, h, layout, seed=5)
        return [sty.step(s, slot, FrameParams(steps=2)) for slot in slots]

    backend.set_backend("triton")
    try:
        on = frames()
        monkeypatch.setattr(refiner_module, "refiner_features", refiner_features_reference)
        off = frames()
    finally:
        backend.set_backend("auto")
    for a, b in zip(on, off):
        assert a.shape == (3, h, w) and (a - b).abs().max() < 1e-5
    assert (on[0] - on[1]).abs().max() > 0.05  # two different frames, not a constant


# Compiles the kernel as the service launches it (bf16 activations and weights, the default
# model's 10 / 3 / 4 channels, ids and surface, the slot's unit strides specialised as Triton
# does at a launch) for an H100/H200 (sm_90) with the installed Triton, without the interpreter.
AOT = r"""
import inspect, json, os, re, subprocess, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from streamstyle.kernels.refiner_features import triton_kernel as tk, feature_channels

cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
lay = feature_channels(10, 3, 4)
const = dict(STRIDE=4, G0=lay.guide, H0=lay.hist, M0=lay.mask, P0=lay.position, I0=lay.ids, S0=lay.surface,
             E=3, NF=4, NFP=4, CIN=lay.total, CP=32, ID_MASK=255, HAS_IDS=True, HAS_SURFACE=True, OUT=1,
             BLOCK=tk.BLOCK)
const.update(dict.fromkeys(("sl_w", "sg_w", "sh_w", "sm_w", "si_w", "st_c", "ss_c", "sw_c", "sb_s"), 1))
ptrs = {"lat_ptr": "*fp32", "guide_ptr": "*fp32", "hist_ptr": "*fp32", "mask_ptr": "*fp32", "ids_ptr": "*i32",
        "table_ptr": "*bf16", "surf_ptr": "*fp16", "sw_ptr": "*bf16", "sb_ptr": "*bf16", "x_ptr": "*bf16"}
floats = ("inv_stride", "phase_scale", "screen_x", "screen_y")
names = list(inspect.signature(tk._features_kernel.fn).parameters)
sig = {n: "constexpr" if n in const else ptrs.get(n, "fp32" if n in floats else "i32") for n in names}
attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
         if n in ptrs or (sig[n] == "i32" and n not in ("ss_c",))}
k = triton.compile(ASTSource(fn=tk._features_kernel, signature=sig, constexprs=const, attrs=attrs),
                   target=GPUTarget("cuda", 90, 32), options={"num_warps": tk.NUM_WARPS, "enable_fp_fusion": False})
with tempfile.NamedTemporaryFile("wb", suffix=".cubin", delete=False) as f:
    f.write(k.asm["cubin"])
usage = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True).stdout
os.unlink(f.name)
ptx = k.asm["ptx"]
print(json.dumps({"cubin": len(k.asm["cubin"]), "regs": int(re.search(r"REG:(\d+)", usage).group(1)),
                  "spill_bytes": int(re.search(r"LOCAL:(\d+)", usage).group(1)),
                  "sin_approx": "sin.approx" in ptx or "cos.approx" in ptx, "nv_sinf": "__nv_sinf" in ptx}))
"""


def test_the_kernel_compiles_for_hopper_with_accurate_trig_and_no_spills():
    """The interpreter accepts code the compiler rejects: compile for sm_90 (what the GPU machine
    runs); `tl.sin` / `tl.cos` must be libdevice's accurate ones (the reference's CUDA sin is),
    not the approximate instructions; no register spills."""
    import triton

    if not os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")):
        pytest.skip("this Triton ships no cuobjdump")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", AOT], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["cubin"] > 0 and got["nv_sinf"] and not got["sin_approx"], got
    assert got["spill_bytes"] == 0, got


@pytest.mark.gpu
@pytest.mark.parametrize("with_ids, with_surface", [(True, True), (False, False)])
def test_kernel_matches_reference_on_the_gpu(gen, with_ids, with_surface):
    """bf16 at 1280x720 with the default model's channels, as the service runs it; the reference
    runs on the GPU too (cuBLAS's Linear, ATen's CUDA upsample), so the comparison is against
    exactly what the model computed before the kernel."""
    a = case(1, 720, 1280, 4, 10, 3, 4, gen, ids=with_ids, surface=with_surface, wdtype=torch.bfloat16,
             binary_mask=True, device="cuda")
    lay = feature_channels(10, 3, 4)
    with torch.no_grad():
        out = torch.full((1, 720, 1280, lay.total), NAN, dtype=torch.bfloat16, device="cuda")
        got = call(refiner_features, a, 4, 1277, 719, torch.bfloat16, out=out)
        want = call(refiner_features_reference, a, 4, 1277, 719, torch.bfloat16)
    assert got is out
    assert_matches(got, want, torch.bfloat16, lay, surface_share=0.9999)


@pytest.mark.gpu
def test_the_kernel_replays_in_a_cuda_graph(gen):
    """Captured once with its output passed in, replayed on new inputs: the replay equals an
    eager run on those inputs, byte for byte."""
    a = case(1, 720, 1280, 4, 10, 3, 4, gen, wdtype=torch.bfloat16, device="cuda")
    out = torch.empty(1, 720, 1280, 32, dtype=torch.bfloat16, device="cuda")
    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            call(refiner_features, a, 4, 1280, 720, torch.bfloat16, out=out)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            call(refiner_features, a, 4, 1280, 720, torch.bfloat16, out=out)
        fresh = case(1, 720, 1280, 4, 10, 3, 4, gen, wdtype=torch.bfloat16, device="cuda")
        for k in ("latent", "history", "mask", "guide", "ids", "surface"):
            a[k].copy_(fresh[k])
        graph.replay()
        torch.cuda.synchronize()
        replayed = out.clone()
        eager = call(refiner_features, a, 4, 1280, 720, torch.bfloat16)
    assert torch.equal(replayed, eager)


@pytest.mark.gpu
def test_the_default_models_frame_is_the_same_with_the_kernel_on_and_off(gen, monkeypatch):
    """The default model in bf16 at 1280x720 through `Stylizer.step` (the frame function, every op
    on its Triton kernel), two frames (the second reads the first as history), a layout with ids
    and a surface: with the input assembly's kernel, and with its reference in its place. The
    refiner is perturbed so that every input channel reaches the frame."""
    from streamstyle.model.config import preset
    from streamstyle.model.frame import FrameParams
    from streamstyle.model.layout import reference_layout
    from streamstyle.model.network import StreamStyleModel
    from streamstyle.model.stylizer import Stylizer
    from streamstyle.tools.bench import random_slot

    from .conftest import perturb

    torch.manual_seed(0)
    model = StreamStyleModel(preset("default"))
    perturb(model.refiner, gen, 0.05)
    model = model.cuda().to(torch.bfloat16).eval()
    w, h = 1280, 720
    layout = reference_layout(w, h, surface=True)
    slots = [random_slot(layout, w, h, "cuda", gen) for _ in range(2)]

    def frames():
        sty = Stylizer(model)
        s = sty.open_session(w, h, layout, seed=5)
        return [sty.step(s, slot, FrameParams(steps=2)) for slot in slots]

    on = frames()
    monkeypatch.setattr(refiner_module, "refiner_features", refiner_features_reference)
    off = frames()
    for a, b in zip(on, off):
        d = (a.float() - b.float()).abs()
        assert d.mean() < 1e-4 and d.max() < 0.05, (d.mean().item(), d.max().item())
