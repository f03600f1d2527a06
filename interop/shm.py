"""The `shm` ring backend: one POSIX shared-memory segment holding the signals and every slot.

Segment layout (little-endian), the format a C client writes:
    0    magic b"SSRING01"                                   (HEADER_FORMAT, HEADER_BYTES = 32)
    8    u32 version (1), u32 slots
    16   u64 input slot bytes, u64 output slot bytes
    32   u32 owner: the pid of the engine process that created the ring (0: not given)
         (OWNER_OFFSET; zero from there up to SIGNALS_OFFSET)
    64   u64 ready[slots], u64 released[slots], u64 done[slots]     (the signal block)
    ...  input slots, then output slots, each starting on a PAGE (4096-byte) boundary

The protocol's `sync` names the segment and the signal block's offset. The service accepts any
offset from SIGNALS_OFFSET on that is 8-byte aligned and leaves the block inside the segment (so
the header is never overwritten by signals), and checks the header: magic, version, and a slot
count equal to the ring's. Segment names are POSIX names without their leading "/" (a "/"
anywhere is refused), at most `limits.MAX_SHM_NAME_CHARS` characters.

Signals are monotonic sequence numbers: a slot's counter holds the last frame that reached that
state. Aligned 8-byte stores are single writes on the CPUs we run on, and each side writes a
counter only after the data it guards, so a reader that sees the new value sees the data.

The engine side (`ShmRing`) is torch-free: its slots are numpy uint8 arrays over the segment. The
service side (`ImportedShmRing`) views its slots as torch tensors (torch imported when it opens
a ring). The service attaches without taking ownership: Python's resource tracker would otherwise
unlink the engine's segment when the service exits. A segment is never unmapped while a view
still uses it (`close` leaves the mapping to the last view and says so).

Who unlinks: the engine, when it closes the ring, when the ring is garbage-collected, or at
interpreter exit. An engine that dies without any of that (SIGKILL, a crash, a C client) leaves
its segments behind; when the service reaps such a client, it unlinks the ring's segments
(`ImportedShmRing.unlink_abandoned`) if the owner process recorded in the header is gone (or none
was recorded) and no other session uses them. A live owner keeps its ring: a frozen or
reconnecting engine reopens its sessions on it.
"""

from __future__ import annotations

import os
import struct
import time
import weakref
from multiprocessing import shared_memory

import numpy as np

from .errors import RingError
from .limits import MAX_SHM_NAME_CHARS, MIN_SLOTS

MAGIC = b"SSRING01"
VERSION = 1
HEADER_FORMAT = "<8sIIQQ"  # magic, version, slots, input slot bytes, output slot bytes
HEADER_BYTES = struct.calcsize(HEADER_FORMAT)  # 32
HEADER_OFFSETS = {"magic": 0, "version": 8, "slots": 12, "input_bytes": 16, "output_bytes": 24}  # of HEADER_FORMAT
OWNER_OFFSET = 32  # u32: the engine's pid, so the service can tell an abandoned ring (0: not given)
OWNER_FORMAT = "<I"
SIGNALS_OFFSET = 64  # where this implementation puts the signal block
SIGNALS = SIGNALS_OFFSET  # the name before it was spelled out
SIGNAL_BYTES = 8  # one little-endian u64 counter
SIGNAL_ARRAYS = ("ready", "released", "done")  # in this order, `slots` counters each
PAGE = 4096


def _align(n: int, a: int = PAGE) -> int:
    return (n + a - 1) // a * a


def _layout(slots: int, input_bytes: int, output_bytes: int) -> tuple[int, list[int], list[int], int]:
    first = _align(SIGNALS_OFFSET + len(SIGNAL_ARRAYS) * SIGNAL_BYTES * slots)
    ins = [first + i * _align(input_bytes) for i in range(slots)]
    out0 = first + slots * _align(input_bytes)
    outs = [out0 + i * _align(output_bytes) for i in range(slots)]
    return first, ins, outs, out0 + slots * _align(output_bytes)


def _unlink(name: str) -> bool:
    """Remove the segment's name (mappings stay valid until unmapped). False if it was gone."""
    try:
        shared_memory._posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        return False
    return True


def _release(shm: shared_memory.SharedMemory) -> None:
    """The engine's end of a segment: unmap it (unless a view still holds it) and unlink it."""
    try:
        shm.close()
    except BufferError:
        pass  # a caller still holds a view: the mapping lives until it goes
    try:
        shm.unlink()  # also tells this process's resource tracker that it is done
    except FileNotFoundError:
        pass


def process_alive(pid: int) -> bool:
    """True if process `pid` exists in this pid namespace and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"  # state follows the (name)
    except (OSError, IndexError):
        return True


def _attach(name: str) -> shared_memory.SharedMemory:
    """Open an existing segment without registering it with this process's resource tracker."""
    try:
        return shared_memory.SharedMemory(name=name, create=False, track=False)  # Python 3.13+
    except TypeError:
        pass
    from multiprocessing import resource_tracker

    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None  # this attach is not ours to unlink
    try:
        return shared_memory.SharedMemory(name=name, create=False)
    finally:
        resource_tracker.register = register


class _Signals:
    def __init__(self, buf, offset: int, slots: int):
        self.array = np.ndarray((3, slots), dtype="<u8", buffer=buf, offset=offset)
        self.ready, self.released, self.done = self.array[0], self.array[1], self.array[2]


class ShmRing:
    """The engine side: owns the segment and unlinks it on close."""

    backend = "shm"

    def __init__(self, shm: shared_memory.SharedMemory, slots: int, input_bytes: int, output_bytes: int):
        self.shm, self.slots = shm, slots
        self.input_bytes, self.output_bytes = input_bytes, output_bytes
        _, self._ins, self._outs, _ = _layout(slots, input_bytes, output_bytes)
        self.signals = _Signals(shm.buf, SIGNALS_OFFSET, slots)
        self._inputs = [np.ndarray((input_bytes,), np.uint8, buffer=shm.buf, offset=o) for o in self._ins]
        self._outputs = [np.ndarray((output_bytes,), np.uint8, buffer=shm.buf, offset=o) for o in self._outs]

    @classmethod
    def create(cls, slots: int, input_bytes: int, output_bytes: int) -> "ShmRing":
        if slots < MIN_SLOTS:
            raise RingError(f"a ring needs at least {MIN_SLOTS} slots, got {slots}")
        if input_bytes < 1 or output_bytes < 1:
            raise RingError("slot sizes must be positive")
        _, _, _, total = _layout(slots, input_bytes, output_bytes)
        shm = shared_memory.SharedMemory(create=True, size=total)
        header = struct.pack(HEADER_FORMAT, MAGIC, VERSION, slots, input_bytes, output_bytes)
        header += struct.pack(OWNER_FORMAT, os.getpid())
        shm.buf[:SIGNALS_OFFSET] = header.ljust(SIGNALS_OFFSET, b"\0")
        ring = cls(shm, slots, input_bytes, output_bytes)
        ring.signals.array[:] = 0
        # Unlinked when closed, when collected, or at interpreter exit, whichever comes first.
        ring._finalizer = weakref.finalize(ring, _release, shm)
        return ring

    def input(self, slot: int) -> np.ndarray:
        """Input slot `slot`'s bytes: [input_bytes] uint8, a view of the segment."""
        return self._inputs[slot]

    def output(self, slot: int) -> np.ndarray:
        """Output slot `slot`'s bytes: [output_bytes] uint8, a view of the segment."""
        return self._outputs[slot]

    def mark_ready(self, slot: int, seq: int) -> None:
        self.signals.ready[slot] = seq

    def is_released(self, slot: int, seq: int) -> bool:
        """True once the service no longer reads the frame `seq` (or any later one) in `slot`."""
        return int(self.signals.released[slot]) >= seq

    def wait_released(self, slot: int, seq: int, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while not self.is_released(slot, seq):
            if time.monotonic() > end:
                return False
            time.sleep(0.0002)
        return True

    def is_done(self, slot: int, seq: int) -> bool:
        return int(self.signals.done[slot]) == seq

    def describe(self, output_format: str = "rgba8") -> dict:
        name = self.shm.name
        return {"backend": "shm", "slots": self.slots, "output_format": output_format,
                "inputs": [{"handle": name, "offset": o, "size": self.input_bytes, "device": -1} for o in self._ins],
                "outputs": [{"handle": name, "offset": o, "size": self.output_bytes, "device": -1} for o in self._outs],
                "sync": {"handle": name, "offset": SIGNALS_OFFSET}}

    def close(self) -> None:
        self._inputs, self._outputs, self.signals = [], [], None
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()  # runs `_release` once, however often close is called
        else:
            _release(self.shm)


class ImportedShmRing:
    """The service side of a `shm` ring."""

    backend = "shm"

    def __init__(self, segments, signals, inputs, outputs, slots, owner: int = 0):
        self._segments, self.signals = segments, signals
        self._inputs, self._outputs, self.slots = inputs, outputs, slots
        self.segment_names = tuple(s.name for s in segments)
        self.owner = owner  # the engine's pid from the header; 0 if it gave none

    @classmethod
    def open(cls, desc: dict, input_bytes: int, output_bytes: int) -> "ImportedShmRing":
        segments: dict[str, shared_memory.SharedMemory] = {}

        def segment(name: str) -> shared_memory.SharedMemory:
            if name not in segments:
                if "/" in name or not name or len(name) > MAX_SHM_NAME_CHARS:
                    raise RingError(f"shared-memory name {name!r} is not valid")
                try:
                    segments[name] = _attach(name)
                except FileNotFoundError:
                    raise RingError(f"no shared-memory segment named {name!r}") from None
                except OSError as exc:
                    raise RingError(f"cannot open shared memory {name!r}: {exc.strerror}") from None
                except ValueError as exc:  # a zero-byte segment cannot be mapped; a NUL in the name
                    what = "is empty (0 bytes)" if "empty" in str(exc) else f"cannot be opened: {exc}"
                    raise RingError(f"shared-memory segment {name!r} {what}") from None
            return segments[name]

        def real_size(shm) -> int:
            try:
                return os.fstat(shm._fd).st_size
            except (AttributeError, OSError):
                return shm.size

        import torch  # the service side views slots as tensors

        def region(r: dict, need: int, what: str) -> "torch.Tensor":
            shm = segment(r["handle"])
            off, size, total = r["offset"], r["size"], real_size(shm)
            if size < need:
                raise RingError(f"{what} holds {size} bytes; this session needs {need}")
            if off < 0 or off > total or size > total - off:  # written so that nothing overflows
                raise RingError(f"{what} (offset {off}, size {size}) runs past its segment of {total} bytes")
            return torch.frombuffer(shm.buf, dtype=torch.uint8, count=need, offset=off)

        try:
            slots = desc["slots"]
            sync = desc["sync"]
            shm = segment(sync["handle"])
            block = len(SIGNAL_ARRAYS) * SIGNAL_BYTES * slots
            if real_size(shm) < HEADER_BYTES:
                raise RingError(f"the sync segment holds {real_size(shm)} bytes, less than the {HEADER_BYTES}-byte header")
            if sync["offset"] < SIGNALS_OFFSET or sync["offset"] + block > real_size(shm) or sync["offset"] % SIGNAL_BYTES:
                raise RingError(f"the signal block (offset {sync['offset']}, {block} bytes) must start at or after "
                                f"byte {SIGNALS_OFFSET}, {SIGNAL_BYTES}-byte aligned, inside its segment")
            magic, version, nslots, _, _ = struct.unpack_from(HEADER_FORMAT, shm.buf, 0)
            (owner,) = struct.unpack_from(OWNER_FORMAT, shm.buf, OWNER_OFFSET)
            if magic != MAGIC or version != VERSION or nslots != slots:
                raise RingError("the sync segment is not a version-1 StreamStyle ring of this many slots")
            signals = _Signals(shm.buf, sync["offset"], slots)
            inputs = [region(r, input_bytes, f"input slot {i}") for i, r in enumerate(desc["inputs"])]
            outputs = [region(r, output_bytes, f"output slot {i}") for i, r in enumerate(desc["outputs"])]
        except Exception:
            for s in segments.values():
                try:
                    s.close()
                except BufferError:
                    pass
            raise
        return cls(list(segments.values()), signals, inputs, outputs, slots, owner)

    def input(self, slot: int):
        """Input slot `slot` as a [need] uint8 torch tensor over the segment."""
        return self._inputs[slot]

    def output(self, slot: int):
        return self._outputs[slot]

    def is_ready(self, slot: int, seq: int) -> bool:
        return int(self.signals.ready[slot]) == seq

    def mark_released(self, slot: int, seq: int) -> None:
        self.signals.released[slot] = seq

    def mark_done(self, slot: int, seq: int) -> None:
        self.signals.done[slot] = seq

    def close(self) -> bool:
        """Unmap everything this side opened. Returns False if a view outlived the ring (its
        mapping then stays until that view is dropped)."""
        self._inputs, self._outputs, self.signals = [], [], None
        clean = True
        for s in self._segments:
            try:
                s.close()
            except BufferError:
                clean = False
        self._segments = []
        return clean

    def unlink_abandoned(self, keep=frozenset()) -> list[str]:
        """For a session reaped as dead: unlink this ring's segments if its owner is gone (its
        pid is no live process, or it gave none), sparing the names in `keep` (other sessions
        still use them). Returns the names unlinked. Works after `close` too."""
        if process_alive(self.owner):
            return []
        return [name for name in self.segment_names if name not in keep and _unlink(name)]
