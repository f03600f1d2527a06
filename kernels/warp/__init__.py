"""Motion-vector warp of the previous latent with the disocclusion test. See `reference.py`."""

from .reference import warp_previous

__all__ = ["warp_previous"]
