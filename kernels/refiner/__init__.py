"""The full-resolution refiner's passes. `reference.py` is the spec (and what training runs)."""

from __future__ import annotations

from .reference import conv3x3_mlp, refine_composite

__all__ = ["conv3x3_mlp", "refine_composite"]
