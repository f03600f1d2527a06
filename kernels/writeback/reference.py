"""Reference for the write-back: the stylized frame into the engine's output format.

The model's output is planar float RGB in [0, 1] ([3, H, W], possibly a cropped view of the padded
frame); the engine reads interleaved RGBA, either 8-bit (RGBA8: round to nearest, ties to even,
alpha 255) or half float (RGBA16F: alpha 1.0), H * W * 4 values at the start of its output slot.
"""

from __future__ import annotations

import torch

FORMATS = ("rgba8", "rgba16f")
BYTES_PER_PIXEL = {"rgba8": 4, "rgba16f": 8}


def output_bytes(width: int, height: int, fmt: str) -> int:
    """Bytes of one frame in an output format."""
    if fmt not in BYTES_PER_PIXEL:
        raise ValueError(f"output format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return width * height * BYTES_PER_PIXEL[fmt]


def write_rgba(rgb: torch.Tensor, out: torch.Tensor, fmt: str) -> None:
    """rgb [3, H, W] float; out: the slot's bytes (uint8, at least H * W * 4 * (1 or 2))."""
    _, h, w = rgb.shape
    if fmt == "rgba8":
        px = out[: h * w * 4].view(h, w, 4)
        px[..., :3] = torch.round(rgb.permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8)
        px[..., 3] = 255
    elif fmt == "rgba16f":
        px = out[: h * w * 8].view(torch.float16).view(h, w, 4)
        px[..., :3] = rgb.permute(1, 2, 0).to(torch.float16)
        px[..., 3] = 1.0
    else:
        raise ValueError(f"output format must be one of {', '.join(FORMATS)}, not {fmt!r}")
