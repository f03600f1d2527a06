"""G-buffer packing: engine formats in, normalised conditioning out. See `reference.py`."""

from .reference import PackKind, PackSpec, pack_gbuffers

__all__ = ["PackKind", "PackSpec", "pack_gbuffers"]
