"""Paged cache bookkeeping: exact page ids, reuse order, refusal and eviction, and a state machine."""

import pytest
import torch
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from streamstyle.model.cache import NULL_PAGE, BlockPool, CacheConfig, PagedStateCache
from streamstyle.model.errors import CacheFullError, SessionError, SessionEvictedError


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_pages_are_handed_out_in_order_and_freed_pages_reused_oldest_first():
    pool = BlockPool(8)  # page 0 is the null page: 7 usable
    assert pool.allocate(3) == [1, 2, 3]
    assert pool.allocate(2) == [4, 5]
    pool.free([2, 3])
    pool.free([1])
    assert pool.allocate(3) == [6, 7, 2]  # never-used pages first, then freed ones in the order freed
    assert pool.allocate(2) == [3, 1]
    assert pool.num_free == 0
    with pytest.raises(CacheFullError):
        pool.allocate(1)


def test_failed_allocation_takes_nothing():
    pool = BlockPool(5)
    pool.allocate(2)
    with pytest.raises(CacheFullError, match="needs 3 free pages and has 2"):
        pool.allocate(3)
    assert pool.num_free == 2
    assert pool.allocate(2) == [3, 4]


def test_double_free_is_a_loud_bug():
    pool = BlockPool(4)
    pages = pool.allocate(2)
    pool.free(pages)
    with pytest.raises(RuntimeError):
        pool.free(pages[:1])
    with pytest.raises(RuntimeError):
        pool.free([NULL_PAGE])


def test_state_round_trips_through_pages_and_sessions_do_not_mix(gen):
    cache = PagedStateCache(CacheConfig(num_pages=9, page_elems=10))
    cache.open("a", 23)  # 3 pages
    cache.open("b", 10)  # 1 page
    assert cache.pages_of("a") == [1, 2, 3] and cache.pages_of("b") == [4]
    va, vb = torch.randn(23, generator=gen), torch.randn(10, generator=gen)
    cache.write("a", va)
    cache.write("b", vb)
    assert torch.equal(cache.read("a"), va) and torch.equal(cache.read("b"), vb)
    cache.close("a")
    cache.open("c", 30)  # takes 5, 6, 7 (never used) before any of a's freed pages
    assert cache.pages_of("c") == [5, 6, 7]
    assert torch.equal(cache.read("c"), torch.zeros(30))  # new sessions start from zeros
    assert torch.equal(cache.read("b"), vb)
    with pytest.raises(SessionError):
        cache.read("a")


def test_state_reads_into_a_given_buffer_and_refuses_a_wrong_one(gen):
    cache = PagedStateCache(CacheConfig(num_pages=9, page_elems=10))
    cache.open("a", 23)
    va = torch.randn(23, generator=gen)
    cache.write("a", va)
    buf = torch.full((23,), float("nan"))
    assert cache.read("a", out=buf) is buf and torch.equal(buf, va)
    for bad in (torch.zeros(22), torch.zeros(23, dtype=torch.float16)):
        with pytest.raises(ValueError, match="23 elements"):
            cache.read("a", out=bad)
    assert torch.equal(cache.read("a"), va)


def test_full_cache_refuses_without_eviction_and_changes_nothing():
    cache = PagedStateCache(CacheConfig(num_pages=5, page_elems=4))
    cache.open(1, 12)
    with pytest.raises(CacheFullError, match="configure idle eviction"):
        cache.open(2, 5)
    assert cache.sessions == [1] and cache.blocks.num_free == 1
    with pytest.raises(CacheFullError, match="whole cache has 4"):
        cache.open(3, 17)


def test_idle_sessions_are_evicted_least_recently_used_first_and_only_as_needed():
    clock = Clock()
    cache = PagedStateCache(CacheConfig(num_pages=7, page_elems=4, evict_idle_after_s=10.0), clock=clock)
    for sid in "abc":
        cache.open(sid, 8)  # 2 pages each: pool full
        clock.now += 1
    clock.now = 20.0
    cache.read("a")  # a is fresh again; b is now least recently used, then c
    evicted = cache.open("d", 8)
    assert evicted == ["b"]
    assert cache.pages_of("d") == [3, 4]
    with pytest.raises(SessionEvictedError, match="evicted"):
        cache.read("b")
    clock.now = 25.0
    with pytest.raises(CacheFullError, match="idle over 10.0 s"):
        cache.open("e", 16)  # would need a, c and d; none but c is idle long enough
    assert sorted(cache.sessions) == ["a", "c", "d"]


class CacheMachine(RuleBasedStateMachine):
    """open/step/close/evict in any order keep the pool's books straight."""

    def __init__(self):
        super().__init__()
        self.clock = Clock()
        self.cache = PagedStateCache(CacheConfig(num_pages=12, page_elems=3, evict_idle_after_s=5.0),
                                     clock=self.clock)
        self.next_id = 0
        self.values: dict[int, torch.Tensor] = {}

    @rule(numel=st.integers(1, 14))
    def open(self, numel):
        sid = self.next_id
        self.next_id += 1
        before = set(self.cache.sessions)
        try:
            evicted = self.cache.open(sid, numel)
        except CacheFullError:
            assert set(self.cache.sessions) == before
            return
        for gone in evicted:
            del self.values[gone]
        self.values[sid] = torch.zeros(numel)

    @precondition(lambda self: self.values)
    @rule(data=st.data())
    def step(self, data):
        sid = data.draw(st.sampled_from(sorted(self.values)))
        assert torch.equal(self.cache.read(sid), self.values[sid])
        new = torch.rand(self.values[sid].numel())
        self.cache.write(sid, new)
        self.values[sid] = new

    @precondition(lambda self: self.values)
    @rule(data=st.data())
    def close(self, data):
        sid = data.draw(st.sampled_from(sorted(self.values)))
        self.cache.close(sid)
        del self.values[sid]

    @rule(dt=st.floats(0.0, 8.0))
    def wait(self, dt):
        self.clock.now += dt

    @invariant()
    def books_balance(self):
        used = [p for sid in self.cache.sessions for p in self.cache.pages_of(sid)]
        assert len(used) == len(set(used)), "a page belongs to two sessions"
        assert NULL_PAGE not in used
        assert len(used) + self.cache.blocks.num_free == self.cache.config.num_pages - 1
        assert set(self.cache.sessions) == set(self.values)


TestCacheMachine = CacheMachine.TestCase
TestCacheMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
