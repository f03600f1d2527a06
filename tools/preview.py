"""`streamstyle preview`: a contact sheet of a capture for a person to look at.

Rows are frames (first, middle, last by default); columns are color, depth, normals, albedo,
motion vectors (hue is direction, brightness is length) and each style target, labelled.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..kernels.gbuffer_pack import pack_gbuffers
from ..model.layout import pack_specs
from ..engine_plugins.capture import CaptureReader


def flow_to_rgb(motion: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Motion [H, W, 2] -> RGB [H, W, 3]: hue from direction, value from length."""
    m = motion.float()
    mag = m.norm(dim=-1)
    scale = scale or max(float(mag.quantile(0.99)) if mag.numel() else 1.0, 1e-3)
    hue = (torch.atan2(m[..., 1], m[..., 0]) / (2 * math.pi)) % 1.0
    val = (mag / scale).clamp(0, 1)
    k = torch.stack([(5 + hue * 6) % 6, (3 + hue * 6) % 6, (1 + hue * 6) % 6], -1)
    rgb = val.unsqueeze(-1) * (1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1))
    return rgb


def _tile(x: torch.Tensor, width: int) -> torch.Tensor:
    """[H, W, 3] float in [0, 1] -> resized [h, width, 3]."""
    h, w, _ = x.shape
    th = max(1, round(h * width / w))
    img = F.interpolate(x.permute(2, 0, 1)[None].float(), size=(th, width), mode="area" if w > width else "nearest")
    return img[0].permute(1, 2, 0).clamp(0, 1)


def contact_sheet(capture: str | Path, out: str | Path, frames: list[int] | None = None, tile_width: int = 192) -> Path:
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise RuntimeError("a contact sheet needs pillow: pip install 'streamstyle[video]'") from None

    reader = CaptureReader(capture)
    n = len(reader)
    if n == 0:
        raise ValueError(f"{capture} holds no frames")
    picks = frames if frames is not None else sorted({0, n // 2, n - 1})
    layout = reader.layout
    names = [c for c in ("color", "depth", "normals", "albedo") if c in layout.names]
    specs = pack_specs(layout, names)
    rows, labels = [], None
    for i in picks:
        f = reader[i]
        full, _ = pack_gbuffers([f.planes[c].unsqueeze(0) for c in names], specs, 1)
        cols, at, lab = [], 0, []
        for c, spec in zip(names, specs):
            part = (full[0, at:at + spec.count].permute(1, 2, 0) + 1) / 2
            at += spec.count
            if spec.count == 1:
                part = part.expand(-1, -1, 3) if c != "depth" else (1 - part).expand(-1, -1, 3)
            cols.append(part)
            lab.append(c)
        if "motion" in layout.names:
            ch = layout["motion"]
            sx, sy = layout.motion_scale(reader.width, reader.height)
            mv = f.planes["motion"][..., ch.first:ch.first + 2].float() * torch.tensor([sx, sy])
            cols.append(flow_to_rgb(mv))
            lab.append("motion")
        for style, img in f.targets.items():
            cols.append(img.float() / 255)
            lab.append(style)
        rows.append(torch.cat([_tile(c, tile_width) for c in cols], 1))
        labels = lab
    sheet = torch.cat(rows, 0)
    label_h = 18
    canvas = torch.ones(sheet.shape[0] + label_h, sheet.shape[1], 3)
    canvas[label_h:] = sheet
    img = Image.fromarray((canvas * 255).round().byte().numpy())
    draw = ImageDraw.Draw(img)
    for k, name in enumerate(labels or []):
        draw.text((k * tile_width + 4, 3), name, fill=(0, 0, 0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out
