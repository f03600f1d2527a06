"""The doorbell: a shared-memory fast path beside ZeroMQ for a session's frame messages.

A ZeroMQ message between two processes on one host passes three thread wake-ups (the sender's
ZeroMQ I/O thread, the receiver's I/O thread, the receiving thread); on the H200 host such a hop
costs ~280-310 us when the receiver sleeps, which put the C client's overhead at ~730 us a frame
(benchmarks/NOTES.md). A doorbell carries a copy of each `frame` message to the service and of each
`done`/`late` answer back through a shared-memory segment that a spinning reader sees at once.

The engine creates the segment and names it in `open.doorbell`; the service attaches it if it can
(`opened.doorbell` says whether it did). **ZeroMQ stays the source of truth**: every message that
goes through the doorbell is also sent over ZeroMQ, so a reader that sleeps, a full lane or a
service that declined the doorbell lose nothing. An engine may ring a frame before or after its
ZeroMQ copy. The C client rings it in `ss_submit`, on the render thread, so that a spinning service
has it without waiting for the client's I/O thread to be scheduled, and then sends the copy from
that thread. A rung frame is in flight from then on: if its ZeroMQ copy is refused, the frame may
still run, and only the loss of the connection (every unanswered frame late, `service_restarted`)
gives up on it. The Python client sends first and rings only once that send succeeded (a frame
ZeroMQ refused is reported as not sent, and never rung). The service rings an answer first, so that
it is in the lane when the ZeroMQ copy wakes the engine's reader, and a reader takes its lane before
its socket. A receiver takes each frame (`seq`) from whichever
path it sees first and drops the other copy silently; it remembers the last `DEDUP_WINDOW` seqs it
took. Hence the one rule for engines: on a session with a doorbell each `seq` is sent once (a frame
refused as `not_ready` is sent again with a new seq; the clients do that anyway).

Segment layout (little-endian, every counter a u64 on its own 64-byte line):

    0                  header: magic u32, version u32, record_bytes u32, records u32, owner pid u32
    LANE_OFFSET[lane]  published u64 (+0), consumed u64 (+64)
    RECORDS_OFFSET     lane TO_SERVICE's `records` records, then lane TO_ENGINE's
    record             payload length u32, then the message's msgpack bytes (as sent over ZeroMQ)

Each lane has one writer and one reader. The writer skips the lane when `published - consumed ==
records` (full: ZeroMQ carries the message anyway), else writes record `published % records` and
then stores `published + 1` (release). The reader, while `consumed < published`, reads that record
and then stores `consumed + 1`. A record longer than `record_bytes - 4` never goes in a lane.
The Python side relies on x86-64's store and load ordering (it has no fences); the service declines
doorbells on other machines (`supported()`), and the C client uses C11 atomics.

Lanes: TO_SERVICE carries `frame` messages only; TO_ENGINE carries `done` and `late` only.
"""

from __future__ import annotations

import math
import os
import platform
import struct
import weakref
from multiprocessing import resource_tracker, shared_memory

from .errors import RingError
from .limits import MAX_SHM_NAME_CHARS as _MAX_NAME_CHARS

MAGIC = 0x4C4C4542  # "BELL" read as a little-endian u32
VERSION = 1
HEADER_FORMAT = "<IIIII"  # magic, version, record_bytes, records, owner pid
RECORD_BYTES = 1024  # per record, its u32 length included: a frame with view, proj, jitter and params takes ~400
RECORDS = 16  # per lane
TO_SERVICE = 0
TO_ENGINE = 1
LANE_OFFSET = (64, 192)  # each lane's `published` counter; its `consumed` counter is 64 bytes after it
CONSUMED_OFFSET = 64
# 8 bytes after a lane's `consumed` counter (its line): the CLOCK_MONOTONIC ns until which its reader
# watches the lane (0: not known). A reader that stores T promises to look at the lane at least once
# at or after T before it sleeps, so a message published before T is seen without a wake-up. The
# writer may then skip waking anything of its own for that message, when T is at least
# WATCH_MARGIN_US ahead of its clock (a store's way to the other core is far shorter). The C client
# skips waking its I/O thread (for the ZeroMQ copy) for a frame it rang while the service watches.
WATCH_OFFSET = 8
WATCH_MARGIN_US = 20
RECORDS_OFFSET = 320
DEDUP_WINDOW = 64  # seqs a receiver remembers having taken from either path
SEGMENT_BYTES = RECORDS_OFFSET + 2 * RECORDS * RECORD_BYTES
# A reader that knows the writer's rhythm spins (instead of sleeping) from SPIN_LEAD_US before an
# expected message to SPIN_TAIL_US after it, each widened by twice the rhythm's deviation up
# to SPIN_SLACK_US; only for a steady rhythm (a period of MIN..MAX_BEAT_MS, deviating by less than
# a quarter of it, the last message under a second ago). The period is the median of the last
# BEAT_SAMPLES intervals and the deviation their median distance from it, so one long interval (a
# session's first frame, a level load, a hitch) changes neither; a new rhythm takes over after
# about half of BEAT_SAMPLES frames.
SPIN_LEAD_US = 1000  # the service's frames: on the H200 a 300 us lead missed 1-2% of 60 fps frames (p99 +280 us)
SPIN_TAIL_US = 1500
SPIN_SLACK_US = 1000
MIN_BEAT_MS = 2
MAX_BEAT_MS = 100
BEAT_SAMPLES = 8


def layout_table() -> str:
    """The markdown table docs/protocol.md carries for the segment's layout (a test compares them)."""
    rows = ["| offset | what |", "| --- | --- |",
            f"| 0 | magic `0x{MAGIC:08X}` (\"BELL\"), version {VERSION}, record bytes {RECORD_BYTES}, "
            f"records per lane {RECORDS}, the creator's pid (five u32) |",
            f"| {LANE_OFFSET[TO_SERVICE]} / {LANE_OFFSET[TO_ENGINE]} | lane to the service / to the engine: `published` "
            f"u64; its `consumed` u64 {CONSUMED_OFFSET} bytes after it, and {WATCH_OFFSET} bytes after that the "
            f"reader's `watched until` u64 (CLOCK_MONOTONIC ns) |",
            f"| {RECORDS_OFFSET} | lane to the service's {RECORDS} records, then lane to the engine's; each a u32 length "
            f"and the message's msgpack bytes ({SEGMENT_BYTES} bytes in all) |"]
    return "\n".join(rows) + "\n"


def supported() -> bool:
    """Whether this machine's Python side may read and write lanes (x86-64's ordering)."""
    return platform.machine().lower() in ("x86_64", "amd64")


class Lane:
    """One direction of a doorbell: push (the writer) or pop (the reader)."""

    def __init__(self, buf, lane: int, record_bytes: int, records: int):
        o = LANE_OFFSET[lane]
        # u64 views of the two counters (native order: little-endian on the x86-64 hosts `supported`
        # names); a read or write of one is one aligned 8-byte access
        self._pub = memoryview(buf)[o: o + 8].cast("Q")
        self._con = memoryview(buf)[o + CONSUMED_OFFSET: o + CONSUMED_OFFSET + 8].cast("Q")
        w = o + CONSUMED_OFFSET + WATCH_OFFSET
        self._watch = memoryview(buf)[w: w + 8].cast("Q")
        base = RECORDS_OFFSET + lane * records * record_bytes
        self._records = [memoryview(buf)[base + i * record_bytes: base + (i + 1) * record_bytes] for i in range(records)]
        self.record_bytes, self.records = record_bytes, records
        self.skipped = 0  # messages that did not go in (lane full or too long)
        self._staged = None  # (record, length, published) between `stage` and `publish`

    def push(self, data: bytes) -> bool:
        """Put one message in the lane; False (and nothing written) if it is full or too long."""
        staged = self._write(data)
        if staged is None:
            return False
        self._pub[0] = staged[2] + 1
        return True

    def stage(self, data: bytes) -> bool:
        """Write `data` into the lane's next record without publishing it; `publish` then writes
        the final bytes, of the same length, over it and publishes them. What is left once a
        message's numbers are known is then one copy and one store (the service stages a frame's
        `done` before it waits for the device: protocol.DoneAnswer). False (and nothing written)
        if the lane is full or `data` too long. The lane's one writer pushes nothing between the
        two; a later `stage` or `push` replaces a staged record that was never published."""
        self._staged = self._write(data)
        return self._staged is not None

    def _write(self, data: bytes):
        """`data` into the next record, unpublished: (record, length, published), or None (and
        nothing written) if the lane is full or `data` too long. Forgets any staged record."""
        self._staged = None
        published, consumed = self._pub[0], self._con[0]
        if published - consumed >= self.records or len(data) > self.record_bytes - 4:
            self.skipped += 1
            return None
        rec = self._records[published % self.records]
        rec[4: 4 + len(data)] = data
        rec[:4] = struct.pack("<I", len(data))
        return rec, len(data), published

    def publish(self, data: bytes) -> None:
        """The staged record's final bytes, published (ValueError if none is staged or `data`'s
        length is not the staged one's: nothing is written then)."""
        if self._staged is None or len(data) != self._staged[1]:
            raise ValueError("publish needs a staged record of the same length")
        rec, n, published = self._staged
        self._staged = None
        rec[4: 4 + n] = data
        self._pub[0] = published + 1

    def pending(self) -> bool:
        return self._pub[0] != self._con[0]

    def watch(self, until_ns: int) -> None:
        """The reader: it will look at the lane at least once at or after `until_ns` (CLOCK_MONOTONIC,
        time.monotonic_ns) before it sleeps (see WATCH_OFFSET)."""
        self._watch[0] = until_ns

    def watched_until(self) -> int:
        """What the reader last stored with `watch` (0: nothing)."""
        return self._watch[0]

    def overrun(self) -> bool:
        """Whether the counters say something no writer keeping the format says: more waiting than the
        lane holds, or fewer published than consumed. The reader then skips to the end
        (`skip_to_end`) instead of reading on."""
        published, consumed = self._pub[0], self._con[0]
        return published < consumed or published - consumed > self.records

    def pop(self) -> bytes | None:
        """The next message, or None when the lane is empty. A record whose length is out of range
        (a writer that does not keep the format) is consumed and returned as b"" so the caller can
        refuse it."""
        published, consumed = self._pub[0], self._con[0]
        if consumed >= published:
            return None
        rec = self._records[consumed % self.records]
        (n,) = struct.unpack("<I", rec[:4])
        data = bytes(rec[4: 4 + n]) if n <= self.record_bytes - 4 else b""
        self._con[0] = consumed + 1
        return data

    def release(self) -> None:
        """Drop the views of the segment (it cannot be unmapped while they exist)."""
        self._staged = None
        for view in (*self._records, self._pub, self._con, self._watch):
            view.release()
        self._records = []

    def skip_to_end(self) -> None:
        """The reader forgets what is in the lane (a service attaching a segment a previous service
        read: what is there was meant for that one)."""
        self._con[0] = self._pub[0]


class Doorbell:
    """A doorbell segment, created by the engine (`create`) or attached by the service (`attach`)."""

    def __init__(self, shm: shared_memory.SharedMemory, record_bytes: int, records: int, owner: bool):
        self.shm, self.owner = shm, owner
        self.name = shm.name
        self.record_bytes, self.records = record_bytes, records
        self.to_service = Lane(shm.buf, TO_SERVICE, record_bytes, records)
        self.to_engine = Lane(shm.buf, TO_ENGINE, record_bytes, records)
        self._finalizer = weakref.finalize(self, _release, shm, owner)

    @classmethod
    def create(cls) -> "Doorbell":
        shm = shared_memory.SharedMemory(create=True, size=SEGMENT_BYTES)
        shm.buf[:RECORDS_OFFSET] = bytes(RECORDS_OFFSET)
        shm.buf[:struct.calcsize(HEADER_FORMAT)] = struct.pack(HEADER_FORMAT, MAGIC, VERSION, RECORD_BYTES, RECORDS, os.getpid())
        return cls(shm, RECORD_BYTES, RECORDS, owner=True)

    @classmethod
    def attach(cls, name: str) -> "Doorbell":
        """The service's side. RingError names what is wrong with the segment."""
        if not name or len(name) > _MAX_NAME_CHARS or "/" in name:
            raise RingError(f"doorbell name {name!r} is not a shared-memory name")
        register = resource_tracker.register
        resource_tracker.register = lambda *args, **kwargs: None  # not ours to unlink
        try:
            shm = shared_memory.SharedMemory(name=name, create=False)
        except (FileNotFoundError, PermissionError, OSError) as exc:
            raise RingError(f"doorbell {name!r} cannot be opened: {exc}") from None
        finally:
            resource_tracker.register = register
        try:
            size = os.fstat(shm._fd).st_size if getattr(shm, "_fd", -1) >= 0 else shm.size
            if size < RECORDS_OFFSET:
                raise RingError(f"doorbell {name!r} is {size} bytes, less than its header")
            magic, version, record_bytes, records, _ = struct.unpack_from(HEADER_FORMAT, shm.buf, 0)
            if magic != MAGIC:
                raise RingError(f"doorbell {name!r} is not a doorbell (magic {magic:#x})")
            if version != VERSION:
                raise RingError(f"doorbell {name!r} has version {version}; this service reads {VERSION}")
            if record_bytes != RECORD_BYTES or records != RECORDS:
                raise RingError(f"doorbell {name!r} has {records} records of {record_bytes} bytes; "
                                f"the contract says {RECORDS} of {RECORD_BYTES}")
            if size < SEGMENT_BYTES:
                raise RingError(f"doorbell {name!r} is {size} bytes; its lanes need {SEGMENT_BYTES}")
            bell = cls(shm, record_bytes, records, owner=False)
        except BaseException:
            shm.close()
            raise
        bell.to_service.skip_to_end()
        return bell

    def unlink_abandoned(self) -> bool:
        """The service's side, for an engine reaped as dead: unlink the segment if the process
        that created it (the header's pid) is gone. Whether it did."""
        from .shm import process_alive

        (pid,) = struct.unpack_from("<I", self.shm.buf, 16)
        if self.owner or process_alive(pid):
            return False
        try:
            self.shm.unlink()
        except FileNotFoundError:
            return False
        return True

    def close(self) -> None:
        for lane in (self.to_service, self.to_engine):
            if lane is not None:
                lane.release()
        self.to_service = self.to_engine = None
        self._finalizer()


def _release(shm: shared_memory.SharedMemory, owner: bool) -> None:
    try:
        shm.close()
    except BufferError:  # a view still exported: the mapping goes with the process
        pass
    if owner:
        try:
            shm.unlink()
        except FileNotFoundError:
            pass


class Beat:
    """A writer's rhythm as a reader learns it: `arrived` at each message, `plan` to choose
    between spinning and sleeping (times in seconds, one monotonic clock)."""

    def __init__(self):
        self.last = 0.0
        self.period = 0.0
        self.dev = 0.0
        self._intervals: list[float] = []

    def arrived(self, t: float) -> None:
        if self.last and 0 < t - self.last < 1.0:
            xs = self._intervals
            xs.append(t - self.last)
            del xs[:-BEAT_SAMPLES]
            self.period = _median(xs)
            self.dev = _median([abs(x - self.period) for x in xs])
        self.last = t

    def plan(self, now: float) -> tuple[bool, float]:
        """(spin now, seconds until the next window opens: inf when no rhythm is known)."""
        p = self.period
        if not (MIN_BEAT_MS / 1000 <= p <= MAX_BEAT_MS / 1000 and self.dev < p / 4 and now - self.last < 1.0):
            return False, math.inf
        slack = min(2 * self.dev, SPIN_SLACK_US / 1e6)
        lead, tail = SPIN_LEAD_US / 1e6 + slack, SPIN_TAIL_US / 1e6 + slack
        expect = self.last + p
        while expect + tail < now:  # frames the engine skipped
            expect += p
        if now >= expect - lead:
            return True, 0.0
        return False, expect - lead - now


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


class Seen:
    """The last DEDUP_WINDOW seqs a receiver took from either path."""

    def __init__(self):
        self._order: list[int] = []
        self._set: set[int] = set()

    def take(self, seq: int) -> bool:
        """True the first time `seq` is seen (handle it), False for its second copy (drop it)."""
        if seq in self._set:
            return False
        self._set.add(seq)
        self._order.append(seq)
        if len(self._order) > DEDUP_WINDOW:
            self._set.discard(self._order.pop(0))
        return True
