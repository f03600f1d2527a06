"""The model's side of the G-buffer layout: torch dtypes of the formats and how each channel is
normalised for the packing kernel.

The layout itself (channels, formats, encodings, offsets, `validate`, `slot_bytes`, views of a
slot) is the engine contract's, in `interop.layout`, and re-exported here unchanged: there is one
copy of every table. What this module adds is the model's reading of it: `FORMATS` with torch
dtypes (derived from the contract's dtype names) and `pack_specs`, the normalisation of each
channel into [-1, 1] that `kernels.gbuffer_pack` applies.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..interop import layout as _contract
from ..interop.layout import (DTYPE_BYTES, ENCODINGS, REQUIRED_FOR_WARP, SEMANTIC_CHANNELS,  # noqa: F401
                              Channel, Format, GBufferLayout, output_bytes, reference_layout, torch_dtype)
from ..kernels.gbuffer_pack import PackKind, PackSpec

# Pixel formats: name -> (torch dtype, components per pixel, integer-normalised?), from the contract's.
FORMATS: dict[str, tuple[torch.dtype, int, bool]] = {
    name: (torch_dtype(f.dtype), f.components, f.unorm) for name, f in _contract.FORMATS.items()}


def pack_specs(layout: GBufferLayout, names: Sequence[str]) -> list[PackSpec]:
    """How the packing kernel normalises each named channel into [-1, 1]."""
    specs = []
    for name in names:
        ch = layout[name]
        to_unit = (1.0 / 255.0) if _contract.FORMATS[ch.format].unorm else 1.0  # raw -> [0, 1] for unorm formats
        enc = ch.resolved_encoding
        if name == "depth":
            near, far = ch.depth_range
            specs.append(PackSpec(ch.first, ch.components, PackKind.LOG_DEPTH, near, far))
        elif name == "color" and enc == "linear_hdr":
            specs.append(PackSpec(ch.first, ch.components, PackKind.TONEMAP, ch.exposure * to_unit, 0.0))
        elif enc == "signed":
            specs.append(PackSpec(ch.first, ch.components, PackKind.AFFINE, to_unit, 0.0))
        else:  # display, unorm, unit: [0, 1] -> [-1, 1]
            specs.append(PackSpec(ch.first, ch.components, PackKind.AFFINE, 2.0 * to_unit, -1.0))
    return specs
