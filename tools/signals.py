"""How the command line stops on SIGTERM and SIGINT: in order, with no traceback.

What must hold:
- A command that gets SIGTERM or SIGINT unwinds through its `finally` blocks and `with` exits
  (so child processes are stopped and shared memory is unlinked) and exits with `exit_code`:
  0 for SIGTERM (a requested stop is a success: service managers send it), 130 for SIGINT (the
  shell's convention, 128 + 2). Nothing but one line goes to stderr.
- The signal becomes an exception in the main thread (`Interrupted`, a BaseException, so no
  `except Exception` swallows it); only the first one does, so that a second signal cannot break
  the cleanup the first one started. The cleanup itself must be bounded (it is: child processes
  get a stop timeout, then SIGKILL).
- Work that must not be cut mid-step (a training step) asks for `deferred()` instead: the signal
  is only recorded and the loop stops at its next boundary; a second signal then interrupts at
  once, as a user pressing Ctrl-C twice expects.
- A launcher of child processes that do their own stopping (`train --nproc`) asks for
  `forwarded()`: each signal goes on to the children, once per signal, and the launcher waits.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Callable, Iterable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """A stop signal arrived; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def exit_code(signum: int) -> int:
    """0 for SIGTERM, 128 + n otherwise (130 for SIGINT)."""
    return 0 if signum == signal.SIGTERM else 128 + signum


class _Raise:
    """Raise `Interrupted` on the first stop signal; ignore the rest (the cleanup is under way)."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self, signum, frame) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        raise Interrupted(signum)


@contextlib.contextmanager
def raised() -> Iterator[None]:
    """Within the block SIGTERM and SIGINT raise `Interrupted` in the main thread (elsewhere the
    block runs with the handlers as they are). SIGINT is taken even when it was inherited as
    ignored (a background job): a stop asked for explicitly is obeyed. The previous handlers come
    back afterwards, so that calling the command line in-process leaves no trace."""
    with _handlers(_Raise()):
        yield


@contextlib.contextmanager
def _handlers(handler) -> Iterator[None]:
    try:
        previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    except ValueError:  # not the main thread: signals are not ours to take
        previous = {}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class StopRequest:
    """A stop signal recorded for a loop to act on at its next boundary (see `deferred`)."""

    def __init__(self):
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    def __call__(self, signum, frame) -> None:
        if self.signum is not None:
            raise Interrupted(signum)  # asked twice: stop now
        self.signum = signum


@contextlib.contextmanager
def deferred() -> Iterator[StopRequest]:
    """Within the block a stop signal only sets the yielded `StopRequest` (true once asked); a
    second one raises `Interrupted`. The previous handlers come back afterwards."""
    request = StopRequest()
    with _handlers(request):
        yield request


class _Forward:
    """Pass each stop signal on to the processes `targets()` names, and record the first."""

    def __init__(self, targets):
        self.targets, self.signum = targets, None

    def __call__(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
        for pid in self.targets():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:  # that one has already exited
                pass


@contextlib.contextmanager
def forwarded(targets: Callable[[], Iterable[int]]) -> Iterator[_Forward]:
    """Within the block every stop signal is passed on to the processes whose ids `targets()`
    gives (each time, so a second Ctrl-C reaches them too) instead of stopping this one, which
    waits for them: the launcher of `train --nproc`, whose ranks run in their own sessions so that
    a terminal's Ctrl-C reaches them only this way, once. The yielded object's `signum` is the
    first signal that came."""
    forward = _Forward(targets)
    with _handlers(forward):
        yield forward
