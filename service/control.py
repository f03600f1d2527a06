"""Studio commands: how OSC and the preview page reach the service loop.

The service's state (sessions, the model, the cache) is touched only by the loop thread. Other
threads (the OSC receiver, the preview page's HTTP handlers) build a `Command` and `put` it on
the service's `ControlQueue`; the loop drains it once per tick (`Service.drain_controls`) and
applies each command exactly as a protocol message would be. A command may carry a `reply`
(a `concurrent.futures.Future`) that the loop resolves with a result dict or a `ControlError`.

What must hold: the queue is bounded (`CONTROL_QUEUE_MAX`, give or take one command per producing
thread: the check and the put are not one step); a put on a full queue is refused at once (the
caller counts it) instead of blocking the thread that made it; the loop's drain takes no lock a
producer can hold (a `queue.SimpleQueue`, whose `get_nowait` never waits).
"""

from __future__ import annotations

import queue
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..interop.limits import CONTROL_QUEUE_MAX

# What a command may do, and the type of its value.
OPS = ("prompt", "preset", "blend", "strength", "steps", "enabled", "save_preset", "record", "stats", "watch", "view")


class ControlError(Exception):
    """A command the loop refused: `code` from `ErrorCode`, and a message for the operator."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Command:
    session: int | None  # None: the only session, if exactly one is open (a page or OSC with one game)
    op: str
    value: Any = None
    source: str = "osc"  # "osc", "preview": metrics and stats count by source
    reply: Future | None = field(default=None, repr=False)


class ControlQueue:
    def __init__(self, maxsize: int = CONTROL_QUEUE_MAX):
        self.maxsize = maxsize
        self._q: queue.SimpleQueue = queue.SimpleQueue()

    def put(self, cmd: Command) -> bool:
        """Queue `cmd` for the loop; False (nothing queued) when the queue is full."""
        if self._q.qsize() >= self.maxsize:
            return False
        self._q.put(cmd)
        return True

    def drain(self, limit: int = CONTROL_QUEUE_MAX):
        """Up to `limit` commands, oldest first, without waiting."""
        for _ in range(limit):
            try:
                yield self._q.get_nowait()
            except queue.Empty:
                return

    def qsize(self) -> int:
        return self._q.qsize()
