"""Reference for the write-back: the stylized frame into the engine's output format.

The model's output is planar float RGB in [0, 1] ([3, H, W], possibly a cropped view of the padded
frame); the engine reads interleaved RGBA, either 8-bit (RGBA8: round to nearest, ties to even,
alpha 255) or half float (RGBA16F: alpha 1.0), H * W * 4 values at the start of its output slot.
"""

from __future__ import annotations

import torch

# What this kernel writes: RGBA of one component type per format. The contract's formats (the
# protocol's `output_format`, `interop.limits.OUTPUT_FORMATS`) are these; a test holds them together
# (kernels import nothing of ours, so the kernel names what it implements).
DTYPES = {"rgba8": torch.uint8, "rgba16f": torch.float16}
FORMATS = tuple(DTYPES)


def output_bytes(width: int, height: int, fmt: str) -> int:
    """Bytes this kernel writes for one frame in `fmt` (the contract's `interop.layout.output_bytes`)."""
    if fmt not in DTYPES:
        raise ValueError(f"output format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return width * height * 4 * DTYPES[fmt].itemsize


def slot_values(out: torch.Tensor, width: int, height: int, fmt: str) -> torch.Tensor:
    """The first frame's worth of an output slot's bytes as the format's values: [H * W * 4] uint8
    (RGBA8) or float16 (RGBA16F). Raises ValueError for an unknown format or a slot too small."""
    need = output_bytes(width, height, fmt)
    if out.dtype != torch.uint8 or out.numel() < need:
        raise ValueError(f"the output slot holds {out.numel()} bytes; {width}x{height} {fmt} needs {need}")
    return out[:need] if fmt == "rgba8" else out[:need].view(torch.float16)


def write_rgba(rgb: torch.Tensor, out: torch.Tensor, fmt: str) -> None:
    """rgb [3, H, W] float; out: the slot's bytes (uint8, at least H * W * 4 * (1 or 2))."""
    _, h, w = rgb.shape
    px = slot_values(out, w, h, fmt).view(h, w, 4)
    if fmt == "rgba8":
        px[..., :3] = torch.round(rgb.permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8)
        px[..., 3] = 255
    else:
        px[..., :3] = rgb.permute(1, 2, 0).to(torch.float16)
        px[..., 3] = 1.0
