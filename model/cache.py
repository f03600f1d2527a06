"""Paged temporal cache: every session's state in fixed-size pages of one preallocated pool.

Modelled on vLLM's v1 KV-cache manager. GPU side: one [num_pages, page_elems] float32 tensor,
allocated once, reached only through integer page tables (`kernels.paged`): a session's state is
its `StateSpec` flat vector of float32 words (bf16 fields packed two to a word, carried bit for
bit). A CUDA graph reaches the pool through a copy of the session's device page table
(`device_table`), so the gather and the scatter run inside the replay. CPU side, plain Python:
a `BlockPool` with a free queue and a reserved null page (page 0, never handed out), and a page
table per session.

What must hold, always:
- free + used == num_pages - 1 (the null page is neither);
- no page belongs to two sessions, and the null page belongs to none;
- a session holds the same pages from open to close (memory per session is constant however many
  frames it runs);
- freed pages go to the back of the free queue and allocation takes from the front, so the page
  freed longest ago is reused first;
- when the pool is full, `open` either evicts sessions idle longer than `evict_idle_after_s`
  (least recently used first, only as many as needed) or raises `CacheFullError`; it never
  allocates device memory, so it cannot run out of it. A failed open changes nothing.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, Hashable

import torch

from ..kernels.paged import paged_gather, paged_scatter
from .errors import CacheFullError, ConfigError, SessionError, SessionEvictedError

NULL_PAGE = 0


@dataclass(frozen=True)
class CacheConfig:
    num_pages: int = 256  # including the reserved null page
    page_elems: int = 65536  # float32 elements per page (256 KiB)
    evict_idle_after_s: float | None = None  # None: never evict, refuse new sessions when full

    def validate(self) -> "CacheConfig":
        if not (isinstance(self.num_pages, int) and self.num_pages >= 2):
            raise ConfigError("cache num_pages must be an integer >= 2 (one is the null page)")
        if not (isinstance(self.page_elems, int) and self.page_elems >= 1):
            raise ConfigError("cache page_elems must be a positive integer")
        if self.evict_idle_after_s is not None and not self.evict_idle_after_s >= 0:
            raise ConfigError("evict_idle_after_s must be None or >= 0")
        return self

    @property
    def page_bytes(self) -> int:
        return 4 * self.page_elems

    def pages_for(self, numel: int) -> int:
        return max(1, math.ceil(numel / self.page_elems))


class BlockPool:
    """CPU bookkeeping of page ids. Page 0 is the null page and is never allocated."""

    def __init__(self, num_pages: int):
        self.num_pages = num_pages
        self._free: deque[int] = deque(range(1, num_pages))
        self._is_free = [False] + [True] * (num_pages - 1)

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, n: int) -> list[int]:
        """n pages from the front of the free queue, or `CacheFullError` and nothing taken."""
        if n > len(self._free):
            raise CacheFullError(f"the temporal cache needs {n} free pages and has {len(self._free)}")
        pages = [self._free.popleft() for _ in range(n)]
        for p in pages:
            self._is_free[p] = False
        return pages

    def free(self, pages: list[int]) -> None:
        for p in pages:
            if p == NULL_PAGE or self._is_free[p]:
                raise RuntimeError(f"page {p} freed twice or is the null page")  # a bookkeeping bug
        for p in pages:
            self._is_free[p] = True
            self._free.append(p)


@dataclass
class PageTable:
    pages: list[int]
    device_table: torch.Tensor  # [n] int64 on the pool's device
    numel: int
    last_used: float


class PagedStateCache:
    """Pages of session state, keyed by any hashable session id."""

    def __init__(self, config: CacheConfig, device: torch.device | str = "cpu",
                 clock: Callable[[], float] = time.monotonic):
        self.config = config.validate()
        self.device = torch.device(device)
        self.pool = torch.zeros(config.num_pages, config.page_elems, dtype=torch.float32, device=self.device)
        self.blocks = BlockPool(config.num_pages)
        self._tables: OrderedDict[Hashable, PageTable] = OrderedDict()  # least recently used first
        self._evicted: set[Hashable] = set()
        self._clock = clock

    def __contains__(self, sid: Hashable) -> bool:
        return sid in self._tables

    def was_evicted(self, sid: Hashable) -> bool:
        """True if `sid` lost its pages to eviction (and was not opened again since)."""
        return sid in self._evicted

    @property
    def sessions(self) -> list[Hashable]:
        return list(self._tables)

    def pages_of(self, sid: Hashable) -> list[int]:
        return list(self._table(sid).pages)

    @property
    def used_pages(self) -> int:
        return sum(len(t.pages) for t in self._tables.values())

    def open(self, sid: Hashable, numel: int) -> list[Hashable]:
        """Give session `sid` pages for `numel` float32 elements, zeroed. Returns the sessions
        evicted to make room (empty unless the pool was full and eviction is configured)."""
        if sid in self._tables:
            raise SessionError(f"session {sid!r} already has cache pages")
        need = self.config.pages_for(numel)
        if need > self.config.num_pages - 1:
            raise CacheFullError(f"a session of {numel * 4} bytes needs {need} pages; the whole "
                                 f"cache has {self.config.num_pages - 1}")
        evicted = self._make_room(need)
        pages = self.blocks.allocate(need)
        table = torch.tensor(pages, dtype=torch.int64, device=self.device)
        self.pool.index_fill_(0, table, 0.0)
        self._tables[sid] = PageTable(pages, table, numel, self._clock())
        self._evicted.discard(sid)
        return evicted

    def _make_room(self, need: int) -> list[Hashable]:
        if self.blocks.num_free >= need:
            return []
        limit = self.config.evict_idle_after_s
        if limit is None:
            raise CacheFullError(f"the temporal cache is full: {self.blocks.num_free} free pages, "
                                 f"{need} needed; close a session or configure idle eviction")
        now = self._clock()
        victims, freed = [], self.blocks.num_free
        for sid, t in self._tables.items():  # least recently used first
            if freed >= need:
                break
            if now - t.last_used > limit:
                victims.append(sid)
                freed += len(t.pages)
        if freed < need:
            raise CacheFullError(f"the temporal cache is full: {need} pages needed, and sessions idle "
                                 f"over {limit} s hold only {freed - self.blocks.num_free}")
        for sid in victims:
            self.close(sid)
            self._evicted.add(sid)
        return victims

    def close(self, sid: Hashable) -> None:
        t = self._table(sid)
        del self._tables[sid]
        self.blocks.free(t.pages)

    def _table(self, sid: Hashable) -> PageTable:
        t = self._tables.get(sid)
        if t is None:
            if sid in self._evicted:
                raise SessionEvictedError(f"session {sid!r} was evicted from the temporal cache "
                                          "after being idle; open a new session")
            raise SessionError(f"session {sid!r} has no cache pages")
        return t

    def device_table(self, sid: Hashable) -> torch.Tensor:
        """The session's page ids, [n] int64 on the pool's device (the same tensor from open to
        close: never modify it); marks the session used, as `read` does. For a caller that gathers
        and scatters itself (a CUDA graph)."""
        t = self._table(sid)
        t.last_used = self._clock()
        self._tables.move_to_end(sid)
        return t.device_table

    def read(self, sid: Hashable, out: torch.Tensor | None = None) -> torch.Tensor:
        """The session's state as a flat [numel] float32 tensor (new, or `out`); marks it used."""
        t = self._table(sid)
        if out is not None and (out.numel() != t.numel or out.dtype != self.pool.dtype or out.device != self.pool.device):
            raise ValueError(f"state of {t.numel} elements read into a {out.dtype} tensor of {out.numel()} on {out.device}")
        t.last_used = self._clock()
        self._tables.move_to_end(sid)
        return paged_gather(self.pool, t.device_table, t.numel, out=out)

    def write(self, sid: Hashable, flat: torch.Tensor) -> None:
        t = self._table(sid)
        if flat.numel() != t.numel:
            raise ValueError(f"state of {flat.numel()} elements written to a session of {t.numel}")
        paged_scatter(self.pool, t.device_table, flat)
