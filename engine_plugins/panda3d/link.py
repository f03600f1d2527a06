"""The plugin's connection to the service: the Python client, run on a thread of its own.

The game thread never waits on the service. It asks `take_slot()` for an input slot that the
service has released (None when there is none: the frame is then not stylized), writes the
G-buffers into that slot's planes, and hands it back with `submit()`. This thread owns the client
and its ZeroMQ socket (a socket is never shared between threads): it connects (and reconnects when
the service restarts, which the client does by reopening the session on the same ring), opens the
session, sends the submitted frames and collects answers, and copies each finished frame into
`latest` under a lock, so the game thread reads a whole frame or the previous one, never a slot the
service is writing. What the game sees of a dead or silent service is only "no new output".
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...interop.client import Client, ServiceError


@dataclass
class LinkStats:
    submitted: int = 0
    done: int = 0
    late: int = 0
    errors: int = 0
    skipped: int = 0  # frames the game rendered while no slot was free
    connects: int = 0
    last_error: str | None = None
    service_ms: list[float] = field(default_factory=list)  # FRAME received to DONE sent, per done frame
    model_ms: list[float] = field(default_factory=list)
    round_trip_ms: list[float] = field(default_factory=list)  # submit to done seen by this thread


@dataclass
class Output:
    image: np.ndarray  # [H, W, 4] uint8, top row first
    seq: int
    frame: Any  # what the game passed to submit() as `tag` (its frame number)
    received: float  # time.monotonic() when it arrived


class ServiceLink(threading.Thread):
    def __init__(self, address: str, width: int, height: int, layout, prompt: Any = None,
                 params: dict | None = None, seed: int = 0, name: str = "streamstyle-panda3d",
                 retry_s: float = 0.5, request_timeout_s: float = 5.0):
        super().__init__(name="streamstyle-link", daemon=True)
        self.address, self.width, self.height, self.layout = address, width, height, layout
        self.prompt, self.params, self.seed, self.client_name = prompt, dict(params or {}), seed, name
        self.retry_s, self.request_timeout_s = retry_s, request_timeout_s
        self.stats = LinkStats()
        self.connected = threading.Event()
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._latest: Output | None = None
        self._free: int | None = None  # an acquired slot the game may write
        self._views: list[dict] = []
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()  # ("frame", slot, meta) | ("prompt", ...) ...
        self._sent_at: dict[int, tuple[float, Any]] = {}
        self.client: Client | None = None
        self.session = None

    # --- the game thread's side ------------------------------------------------------------

    def take_slot(self) -> tuple[int, dict] | None:
        """A released input slot and its per-channel numpy views, or None (skip this frame)."""
        with self._lock:
            slot, self._free = self._free, None
        if slot is None:
            self.stats.skipped += 1
            return None
        return slot, self._views[slot]

    def submit(self, slot: int, tag: Any = None, view=None, proj=None, dt: float | None = None,
               params: dict | None = None) -> None:
        self._outbox.put(("frame", slot, tag, view, proj, dt, params))

    def set_prompt(self, prompt: Any, blend_frames: int = 0) -> None:
        self.prompt = prompt
        self._outbox.put(("prompt", prompt, blend_frames))

    def set_params(self, **params) -> None:
        self.params.update(params)
        self._outbox.put(("params", params))

    def latest(self) -> Output | None:
        with self._lock:
            return self._latest

    def stop(self, timeout_s: float = 5.0) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout_s)

    # --- this thread ----------------------------------------------------------------------

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                if self.session is None:
                    self._open()
                    continue
                self._step()
        finally:
            self._close()

    def _open(self) -> None:
        try:
            if self.client is None:
                self.client = Client(self.address, name=self.client_name, timeout_s=self.request_timeout_s,
                                     connect=False)
            self.client.connect(timeout_s=min(1.0, self.request_timeout_s))
            self.session = self.client.open_session(self.width, self.height, self.layout, backend="shm",
                                                    prompt=self.prompt, params=self.params or None, seed=self.seed)
            self._views = [{k: np.asarray(v) for k, v in self.session.planes(i).items()}
                           for i in range(self.session.slots)]
            self.stats.connects += 1
            self.connected.set()
        except (ServiceError, OSError) as exc:
            self.stats.last_error = str(exc)
            self.session = None
            self._halt.wait(self.retry_s)

    def _step(self) -> None:
        client, session = self.client, self.session
        try:
            with self._lock:
                need = self._free is None
            if need:
                try:
                    slot = session.acquire_slot(timeout_s=0.0)
                    with self._lock:
                        self._free = slot
                except TimeoutError:
                    pass
            while True:
                try:
                    item = self._outbox.get_nowait()
                except queue.Empty:
                    break
                self._send(item)
            for ev in client.poll(timeout_ms=2):
                self._event(ev)
            self.connected.set() if client.connected else self.connected.clear()
        except ServiceError as exc:  # the queue is full, or a request failed: try again next step
            self.stats.errors += 1
            self.stats.last_error = str(exc)
            self._halt.wait(0.01)

    def _send(self, item) -> None:
        kind = item[0]
        if not self.client.connected:
            return  # dropped: the game goes on showing its own frame
        if kind == "frame":
            _, slot, tag, view, proj, dt, params = item
            seq = self.session.submit(slot, view=view, proj=proj, dt=dt, params=params)
            self._sent_at[seq] = (time.monotonic(), tag)
            self.stats.submitted += 1
        elif kind == "prompt":
            self.session.set_prompt(item[1], blend_frames=item[2])
        elif kind == "params":
            self.session.set_params(**item[1])

    def _event(self, ev) -> None:
        sent, tag = self._sent_at.pop(ev.seq, (None, None))
        if ev.status == "done":
            image = np.array(np.asarray(ev.session.output(ev.slot)), dtype=np.uint8)
            self.stats.done += 1
            self.stats.late += int(ev.late)
            if ev.timings:
                self.stats.service_ms.append(float(ev.timings.get("total_ms", 0.0)))
                self.stats.model_ms.append(float(ev.timings.get("model_ms", 0.0)))
            if sent is not None:
                self.stats.round_trip_ms.append((time.monotonic() - sent) * 1000)
            with self._lock:
                if self._latest is None or ev.seq > self._latest.seq:
                    self._latest = Output(image, ev.seq, tag, time.monotonic())
        elif ev.status == "late":
            self.stats.late += 1
        else:
            self.stats.errors += 1
            self.stats.last_error = f"{ev.reason}: {ev.message}"

    def _close(self) -> None:
        try:
            if self.session is not None:
                self.session.close()
        except Exception:  # noqa: BLE001 (shutting down: the service may be gone)
            pass
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001
                pass
