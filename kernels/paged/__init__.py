"""Paged gather/scatter of session state by page table. See `reference.py`."""

from .reference import paged_gather, paged_scatter

__all__ = ["paged_gather", "paged_scatter"]
