"""Kernels of the per-frame hot path, one folder per op.

Each `kernels/<op>/` holds `reference.py`, a plain PyTorch implementation that is the op's
specification, and exports the op's public function from its `__init__`. The model calls ops only
through those functions, so a fast (Triton) version drops in behind the same signature. Nothing here
imports anything else of ours.
"""
