"""Reference backward warp of the previous frame's latent, with a depth-test disocclusion mask.

Motion follows the engines' convention: for a pixel of the current frame, motion is the offset to
the same surface point in the previous frame (current to previous), here in latent pixels. The
latent is sampled bilinearly; the previous depth is sampled at the nearest texel, so a depth edge
never produces an in-between depth that belongs to no surface. A pixel is valid (its history can be
trusted) when its source lies inside the previous frame and the previous depth found there matches
the current depth within `tolerance` of the current depth. Everything else is disoccluded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def warp_previous(prev_latent: torch.Tensor, prev_depth: torch.Tensor, motion: torch.Tensor,
                  depth: torch.Tensor, tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp `prev_latent` into the current frame.

    prev_latent [B, C, h, w]; prev_depth, depth [B, 1, h, w] linear depth; motion [B, 2, h, w]
    (x, y) in latent pixels, current to previous. Returns warped [B, C, h, w] (same dtype as
    prev_latent) and valid [B, 1, h, w] bool.
    """
    b, _, h, w = prev_latent.shape
    ys = torch.arange(h, device=motion.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=motion.device, dtype=torch.float32).view(1, 1, w)
    src_x = xs + motion[:, 0].float()  # [B, h, w], texel-centre coordinates
    src_y = ys + motion[:, 1].float()
    # grid_sample with align_corners=False puts texel i's centre at (2i + 1) / size - 1.
    grid = torch.stack(((2 * src_x + 1) / w - 1, (2 * src_y + 1) / h - 1), dim=-1)  # [B, h, w, 2]
    warped = F.grid_sample(prev_latent.float(), grid, mode="bilinear", padding_mode="border",
                           align_corners=False).to(prev_latent.dtype)
    src_depth = F.grid_sample(prev_depth.float(), grid, mode="nearest", padding_mode="border",
                              align_corners=False)
    inside = (src_x > -0.5) & (src_x < w - 0.5) & (src_y > -0.5) & (src_y < h - 0.5)  # [B, h, w]
    cur = depth.float()
    same_surface = (src_depth - cur).abs() <= tolerance * cur.abs()
    valid = inside.unsqueeze(1) & same_surface
    return warped, valid
