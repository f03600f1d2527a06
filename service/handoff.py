"""Handing copies of a frame from the service loop to a writer thread without the loop ever waiting.

A `FrameRing` holds `frames` preallocated copies of a frame, each a set of named parts ("input":
the input slot's bytes, "output": the output slot's): host buffers (pinned on a GPU, so that the
device-to-host copies are asynchronous) and, on a GPU, a device staging buffer for each part whose
source the loop may rewrite before an asynchronous copy has finished (the output slot: the next
frame on that slot writes it on the frame's stream). Two `queue.SimpleQueue`s carry buffer
indices: `free` (writer -> loop) and `filled` (loop -> writer).

What must hold:
- the loop (the producer) never blocks and takes no lock a writer can hold: `put` takes a free
  index with `get_nowait` (none free, or the ring not allocated yet: it returns False and the
  caller counts the frame as left out), copies, and publishes with `SimpleQueue.put`, which never
  blocks. SimpleQueue's own lock is the only one, and only the writer ever waits on it;
- a buffer is written by the loop only while its index is out of `free` and not yet published,
  and read by the writer only after it is published (on a GPU, after its copy's event completed)
  and before it is given back: no buffer is touched by both threads at once;
- the writer allocates (`allocate`: pinning a gigabyte of host memory takes a while) and then
  `open`s the ring; until then `put` leaves frames out;
- on a GPU the copies to the host run on the ring's own `side` stream after the frame's work
  (`side.wait_stream`); the frame's stream never waits for them (only the staging copies, a
  device-to-device copy of the output, run on it). Whoever gives the input slot back to the
  engine records that signal on `side`, so that the engine cannot overwrite the slot mid-copy
  (`Service._tap_inputs`).
"""

from __future__ import annotations

import queue
from typing import Any, Mapping

import numpy as np
import torch

from ..interop.limits import RECORD_QUEUE_FRAMES, RECORD_RING_BYTES


def ring_frames(frame_bytes: int) -> int:
    """How many copies a ring of frames this large holds: RECORD_QUEUE_FRAMES, fewer when they
    would pass RECORD_RING_BYTES, never fewer than 2 (one being written, one being filled)."""
    return max(2, min(RECORD_QUEUE_FRAMES, RECORD_RING_BYTES // max(1, frame_bytes)))


class FrameRing:
    def __init__(self, parts: Mapping[str, int], device: torch.device | str, staged: tuple[str, ...] = ()):
        """parts: {name: bytes} of one frame's copy; staged: the parts that go through a device
        staging buffer on a GPU (their source is rewritten by later frames)."""
        self.parts = dict(parts)
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.staged = tuple(staged) if self.cuda else ()
        self.frames = ring_frames(sum(self.parts.values()))
        self.side = torch.cuda.Stream(self.device) if self.cuda else None
        self.host: list[dict[str, torch.Tensor]] = []  # [frames] of {part: [bytes] uint8}
        self._host_np: list[dict[str, np.ndarray]] = []
        self._staging: list[dict[str, torch.Tensor]] = []
        self._events: list = []
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._filled: queue.SimpleQueue = queue.SimpleQueue()
        self.ready = False  # set by the writer once the buffers exist; read by the loop

    # --- the writer's side -------------------------------------------------------------------

    def allocate(self) -> None:
        """Make the buffers (on the writer thread); `open` then lets the loop use them."""
        if self.cuda:
            with torch.cuda.device(self.device):
                for _ in range(self.frames):
                    self.host.append({k: torch.empty(n, dtype=torch.uint8, pin_memory=True) for k, n in self.parts.items()})
                    self._staging.append({k: torch.empty(self.parts[k], dtype=torch.uint8, device=self.device)
                                          for k in self.staged})
                    self._events.append(torch.cuda.Event())
        else:
            for _ in range(self.frames):
                # Written once here, so that the loop's first copies do not pay the page faults.
                self.host.append({k: torch.zeros(n, dtype=torch.uint8) for k, n in self.parts.items()})
            self._host_np = [{k: t.numpy() for k, t in bufs.items()} for bufs in self.host]

    def open(self) -> None:
        """From now on the loop's `put`s take the buffers (the writer, once it can write)."""
        for i in range(self.frames):
            self._free.put(i)
        self.ready = True

    def get(self) -> tuple[int, dict[str, torch.Tensor], Any] | None:
        """The next published frame (index, {part: host bytes}, item), waiting for it; None once
        the loop closed the ring and every frame before that was taken."""
        got = self._filled.get()
        if got is None:
            return None
        i, item = got
        if self.cuda:
            self._events[i].synchronize()  # this thread waits for the copy, never the loop
        return i, self.host[i], item

    def give_back(self, index: int) -> None:
        self._free.put(index)

    def release(self) -> None:
        """Let the buffers go (the writer, once the loop has closed the ring: nothing puts any more)."""
        self.ready = False
        self.host, self._host_np, self._staging, self._events = [], [], [], []

    # --- the loop's side ---------------------------------------------------------------------

    def put(self, sources: Mapping[str, Any], item: Any) -> bool:
        """Copy each part's source (a [>= bytes] uint8 numpy array or tensor: a ring's slot) into a
        free buffer and publish it with `item`. False, and nothing copied, when no buffer is free."""
        if not self.ready:
            return False
        try:
            i = self._free.get_nowait()
        except queue.Empty:
            return False
        if self.cuda:
            main = torch.cuda.current_stream(self.device)
            staged = {k: self._staging[i][k].copy_(sources[k][: self.parts[k]]) for k in self.staged}  # on `main`
            self.side.wait_stream(main)
            with torch.cuda.stream(self.side):
                for k, n in self.parts.items():
                    self.host[i][k].copy_(staged[k] if k in staged else sources[k][:n], non_blocking=True)
                self._events[i].record(self.side)
        else:
            for k, n in self.parts.items():
                src = sources[k]
                if isinstance(src, torch.Tensor):
                    self.host[i][k].copy_(src[:n])
                else:
                    np.copyto(self._host_np[i][k], src[:n])
        self._filled.put((i, item))
        return True

    def close(self) -> None:
        """No more frames (the loop, after its last `put`): the writer ends after the ones published."""
        self._filled.put(None)


def to_host_async(t: torch.Tensor, side) -> tuple[torch.Tensor, Any]:
    """A host copy of a device tensor made on the `side` stream after the current stream's work,
    and the event that says it is complete: the current stream does not wait for it. `t` must not
    be changed by the caller afterwards (its memory is kept for `side` until the copy is done)."""
    side.wait_stream(torch.cuda.current_stream(t.device))
    with torch.cuda.stream(side):
        host = t.to("cpu", non_blocking=True)
        event = torch.cuda.Event()
        event.record(side)
    t.record_stream(side)
    return host, event
