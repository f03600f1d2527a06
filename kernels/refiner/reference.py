"""Reference for the full-resolution guided refiner: its two stages as plain PyTorch ops (the spec).

Tensors are channels-last (NHWC, contiguous). X [B, H, W, Cin] is the refiner's per-pixel input
(G-buffer features, the decoder's output, the warped history and its validity mask), built by the
model; float32 on the CPU, bfloat16 on a GPU.

Stage 1, `conv3x3_mlp(x, w3, b3, cond, w1, b1, act_out)` -> y [B, H, W, C2] in x's dtype:
    h = conv3x3(x; w3 [C1, Cin, 3, 3], b3 [C1]), zero padding 1 (F.conv2d(..., padding=1) on NCHW)
    h = SiLU(h + cond[b])               cond [B, C1], one bias per image, or None
    y = h @ w1^T + b1                   w1 [C2, C1], b1 [C2]; y = SiLU(y) when act_out

Stage 2, `refine_composite(y, x, w3, b3, cond, w1, b1, base_ch, hist_ch, mask_ch, ...)` -> rgb:
    z = SiLU(conv3x3(y; w3 [C1, Cy, 3, 3], b3) + cond[b]);  o = z @ w1^T + b1, w1 [4, C1]
    res = o[..., 0:3], a = o[..., 3]
    base = (x[..., base_ch:base_ch+3] + 1) / 2;  hist = (x[..., hist_ch:hist_ch+3] + 1) / 2
    m = x[..., mask_ch];  fresh = base + res (+ colours[b, ids & 255]);  alpha = sigmoid(a) * m
    rgb = clamp(fresh + alpha * (hist - fresh), 0, 1)       float32 [B, 3, H, W], planar
With a per-image colour table (`colours` [B, 256, 3] float, the refiner's per-style object
colours) and the object ids (`ids` [B, H, W] integer, any strides), each pixel's fresh colour gets
its object's row, looked up by the id's low 8 bits.
`rgb` covers the whole (padded) H x W: the model keeps it as the next frame's history. With an
engine output slot (`out`, uint8 bytes, and `fmt`, "rgba8" or "rgba16f"; one frame, B == 1) the
top-left `width` x `height` pixels are also written into it as interleaved RGBA, alpha 1, row pitch
`width`, exactly as `kernels.writeback` writes (the Triton kernel does it in the same pass).

The composite is computed in float32 whatever the input dtype. Every function here is
differentiable (training runs it under autograd); each pass reads and writes full-resolution
activations, which the fused kernels avoid. The `check_*` functions are the inputs' contract,
shared by both backends.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..refiner_features.reference import ID_BUCKETS as COLOUR_ROWS  # looked up as the id embedding is
from ..writeback.reference import slot_values, write_rgba

DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # what the refiner's activations may be


def _nchw(t: torch.Tensor) -> torch.Tensor:
    """An NHWC tensor seen as NCHW without a copy (channels-last strides, which cuDNN keeps)."""
    return t.permute(0, 3, 1, 2)


def _conv3x3_silu(x: torch.Tensor, w3: torch.Tensor, b3: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    """SiLU(conv3x3(x) + b3 + cond[b]): x [B, H, W, C] -> [B, H, W, C1], in x's dtype."""
    h = F.conv2d(_nchw(x), w3.to(x.dtype), b3.to(x.dtype), padding=1)  # [B, C1, H, W], channels-last
    if cond is not None:
        h = h + cond.to(x.dtype)[:, :, None, None]
    return F.silu(h).permute(0, 2, 3, 1)


def conv3x3_mlp(x: torch.Tensor, w3: torch.Tensor, b3: torch.Tensor, cond: torch.Tensor | None,
                w1: torch.Tensor, b1: torch.Tensor, act_out: bool = True, *,
                out_y: torch.Tensor | None = None) -> torch.Tensor:
    """x [B, H, W, Cin]; w3 [C1, Cin, 3, 3]; b3 [C1]; cond [B, C1] or None; w1 [C2, C1]; b1 [C2].
    Returns y [B, H, W, C2] in x's dtype (into `out_y` when given)."""
    h = _conv3x3_silu(x, w3, b3, cond)
    y = F.linear(h, w1.to(x.dtype), b1.to(x.dtype))  # [B, H, W, C2]
    if act_out:
        y = F.silu(y)
    if out_y is not None:
        return out_y.copy_(y)
    return y.contiguous()


def refine_composite(y: torch.Tensor, x: torch.Tensor, w3: torch.Tensor, b3: torch.Tensor,
                     cond: torch.Tensor | None, w1: torch.Tensor, b1: torch.Tensor,
                     base_ch: int, hist_ch: int, mask_ch: int, width: int | None = None, height: int | None = None,
                     out: torch.Tensor | None = None, fmt: str | None = None, *,
                     out_rgb: torch.Tensor | None = None, ids: torch.Tensor | None = None,
                     colours: torch.Tensor | None = None) -> torch.Tensor:
    """y [B, H, W, Cy]; x [B, H, W, Cin]; w3 [C1, Cy, 3, 3]; b3 [C1]; cond [B, C1] or None;
    w1 [4, C1]; b1 [4]; ids [B, H, W] and colours [B, 256, 3], both or neither. Returns rgb
    [B, 3, H, W] float32 in [0, 1] (into `out_rgb` when given);
    with `out` and `fmt`, also writes the slot (see the module docstring). (float64 inputs, which
    only gradient checks use, give float64.)"""
    z = _conv3x3_silu(y, w3, b3, cond)
    ct = torch.promote_types(torch.promote_types(y.dtype, x.dtype), torch.float32)  # float64 stays (gradcheck)
    o = F.linear(z, w1.to(y.dtype), b1.to(y.dtype)).to(ct)  # [B, H, W, 4]
    xf = x.to(ct)
    base = (xf[..., base_ch:base_ch + 3] + 1.0) * 0.5
    hist = (xf[..., hist_ch:hist_ch + 3] + 1.0) * 0.5
    m = xf[..., mask_ch:mask_ch + 1]
    fresh = base + o[..., 0:3]
    if colours is not None:
        rows = torch.arange(x.shape[0], device=x.device).view(-1, 1, 1)
        fresh = fresh + colours[rows, ids.long() & (COLOUR_ROWS - 1)].to(ct)
    alpha = torch.sigmoid(o[..., 3:4]) * m
    rgb = (fresh + alpha * (hist - fresh)).clamp(0.0, 1.0).permute(0, 3, 1, 2)  # [B, 3, H, W]
    rgb = out_rgb.copy_(rgb) if out_rgb is not None else rgb.contiguous()
    if out is not None:
        write_rgba(rgb[0, :, :height, :width].detach(), out, fmt)
    return rgb


def _shape(name: str, t: torch.Tensor, want: tuple) -> None:
    if tuple(t.shape) != tuple(want):
        raise ValueError(f"refiner: {name} must be {list(want)}, got {list(t.shape)}")


def check_activation(name: str, t: torch.Tensor) -> None:
    """A refiner activation: channels-last [B, H, W, C] of a float dtype it takes."""
    if t.dim() != 4:
        raise ValueError(f"refiner: {name} must be channels-last [B, H, W, C], got {list(t.shape)}")
    if t.dtype not in DTYPES:
        raise ValueError(f"refiner: {name} must be float32, bfloat16 or float16, not {t.dtype}")


def check_cond(cond: torch.Tensor | None, x: torch.Tensor, c1: int) -> None:
    if cond is None:
        return
    _shape("cond", cond, (x.shape[0], c1))
    if cond.device != x.device or not cond.is_floating_point():
        raise ValueError(f"refiner: cond must be a float tensor on {x.device}, got {cond.dtype} on {cond.device}")


def _layer(x: torch.Tensor, w3, b3, cond, w1, b1, c_out: int | None) -> None:
    """The conv3x3 + 1x1 weights fit x [B, H, W, C]; every tensor on x's device."""
    c = x.shape[3]
    if w3.dim() != 4 or tuple(w3.shape[1:]) != (c, 3, 3):
        raise ValueError(f"refiner: w3 must be [C1, {c}, 3, 3] for {c} input channels, got {list(w3.shape)}")
    c1 = w3.shape[0]
    _shape("b3", b3, (c1,))
    if w1.dim() != 2 or w1.shape[1] != c1 or (c_out is not None and w1.shape[0] != c_out):
        want = f"[{c_out if c_out is not None else 'C2'}, {c1}]"
        raise ValueError(f"refiner: w1 must be {want}, got {list(w1.shape)}")
    _shape("b1", b1, (w1.shape[0],))
    for name, t in (("w3", w3), ("b3", b3), ("w1", w1), ("b1", b1)):
        if t.device != x.device or not t.is_floating_point():
            raise ValueError(f"refiner: {name} must be a float tensor on {x.device}, got {t.dtype} on {t.device}")
    check_cond(cond, x, c1)


def check_out_buffer(name: str, t: torch.Tensor | None, shape: tuple, dtype: torch.dtype,
                     device: torch.device) -> None:
    """An output passed in (`out_y`, `out_rgb`) is exactly what the op would have allocated."""
    if t is None:
        return
    if tuple(t.shape) != tuple(shape) or t.dtype != dtype or t.device != device or not t.is_contiguous():
        raise ValueError(f"refiner: {name} must be a contiguous {dtype} {list(shape)} on {device}, "
                         f"got {t.dtype} {list(t.shape)} on {t.device}"
                         f"{'' if t.is_contiguous() else ' (not contiguous)'}")


def check_channels(x: torch.Tensor, base_ch, hist_ch, mask_ch) -> None:
    """The base colour, history colour and mask are channels of x."""
    cin = x.shape[3]
    for name, ch, span in (("base_ch", base_ch, 3), ("hist_ch", hist_ch, 3), ("mask_ch", mask_ch, 1)):
        if isinstance(ch, bool) or not isinstance(ch, int) or not 0 <= ch <= cin - span:
            raise ValueError(f"refiner: {name} {ch!r} must be an int picking {span} of x's {cin} channels")


def check_slot(x: torch.Tensor, out: torch.Tensor | None, fmt: str | None, width, height) -> None:
    """An output slot (both `out` and `fmt`, or neither) takes the top-left `width` x `height`
    pixels of one frame and has the bytes for them."""
    if (out is None) != (fmt is None):
        raise ValueError("refiner: an output slot needs both `out` and `fmt`")
    if out is None:
        return
    b, hh, ww, _ = x.shape
    if b != 1:
        raise ValueError(f"refiner: an output slot holds one frame; got a batch of {b}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height)) \
            or not (0 < width <= ww and 0 < height <= hh):
        raise ValueError(f"refiner: a {width}x{height} frame does not fit the refined {ww}x{hh}")
    if out.device != x.device:
        raise ValueError(f"refiner: the output slot is on {out.device}, the activations on {x.device}")
    slot_values(out, width, height, fmt)  # the format and the slot's size


def check_conv3x3_mlp(x, w3, b3, cond, w1, b1, out_y=None) -> None:
    """Raises ValueError unless the stage-1 inputs fit together (shapes, dtypes, devices)."""
    check_activation("x", x)
    _layer(x, w3, b3, cond, w1, b1, None)
    check_out_buffer("out_y", out_y, (*x.shape[:3], w1.shape[0]), x.dtype, x.device)


def check_colours(x: torch.Tensor, ids: torch.Tensor | None, colours: torch.Tensor | None) -> None:
    """Object colours: a [B, 256, 3] float table and the [B, H, W] integer ids it is looked up by,
    both on x's device, or neither."""
    if (ids is None) != (colours is None):
        raise ValueError("refiner: object colours need both `ids` and `colours`")
    if ids is None:
        return
    _shape("ids", ids, tuple(x.shape[:3]))
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"refiner: ids must be an integer tensor, not {ids.dtype}")
    _shape("colours", colours, (x.shape[0], COLOUR_ROWS, 3))
    if not colours.is_floating_point():
        raise ValueError(f"refiner: colours must be a float tensor, not {colours.dtype}")
    for name, t in (("ids", ids), ("colours", colours)):
        if t.device != x.device:
            raise ValueError(f"refiner: {name} is on {t.device}, the activations on {x.device}")


def check_refine_composite(y, x, w3, b3, cond, w1, b1, base_ch, hist_ch, mask_ch, width=None, height=None,
                           out=None, fmt=None, out_rgb=None, ids=None, colours=None) -> None:
    """Raises ValueError unless the stage-2 inputs fit together: y and x cover the same pixels,
    the channel picks lie inside x, the slot (if any) fits."""
    check_activation("y", y)
    check_activation("x", x)
    if x.shape[:3] != y.shape[:3] or x.device != y.device:
        raise ValueError(f"refiner: y {list(y.shape)} on {y.device} and x {list(x.shape)} on {x.device} "
                         "must cover the same pixels on one device")
    _layer(y, w3, b3, cond, w1, b1, 4)
    check_channels(x, base_ch, hist_ch, mask_ch)
    check_colours(x, ids, colours)
    check_out_buffer("out_rgb", out_rgb, (x.shape[0], 3, *x.shape[1:3]), torch.float32, x.device)
    check_slot(x, out, fmt, width, height)
