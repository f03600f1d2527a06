"""Run `streamstyle serve` in a child process for as long as a `with` block lasts (the demo and
the benchmark drive a real service in its own process this way).

What must hold: the child never outlives the block. It is stopped (SIGTERM, then SIGKILL after a
timeout) on every way out of the block: normal end, an exception, or a stop signal that the
command line turned into one (`tools.signals`). Should this process die without unwinding
(SIGKILL), Linux's parent-death signal stops the child as well.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

from ..service.workers import die_with_parent
from .signals import Interrupted


@contextlib.contextmanager
def child_service(args: Sequence[str], env: dict | None = None, log_path: str | Path | None = None,
                  timeout_s: float = 300.0, stop_timeout_s: float = 30.0) -> Iterator[str]:
    """Start `streamstyle serve ARGS` bound to a fresh ipc:// address, wait until it is ready, yield
    the address, and stop it (SIGTERM, then kill) when the block ends. Raises RuntimeError if it
    exits or does not come up within `timeout_s`; the error carries the end of its log when
    `log_path` is given (otherwise the child writes to this process's output). If the block itself
    fails, the end of that log is printed to stderr before the error goes on."""
    work = Path(tempfile.mkdtemp(prefix="streamstyle-service-"))
    address, ready = f"ipc://{work}/service.sock", work / "ready"
    cmd = [sys.executable, "-m", "streamstyle", "serve", "--bind", address, "--ready-file", str(ready), *args]
    log = open(log_path, "w") if log_path else None
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT if log else None,
                                preexec_fn=die_with_parent())
    finally:
        if log:
            log.close()  # the child holds its own descriptor
    tail = (lambda: "; its log: " + str(log_path) + "\n" + Path(log_path).read_text()[-2000:]) if log_path else (lambda: "")
    try:
        end = time.monotonic() + timeout_s
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError("the service exited during start-up" + tail())
            if time.monotonic() > end:
                raise RuntimeError(f"the service did not start within {timeout_s:.0f} s" + tail())
            time.sleep(0.1)
        try:
            yield address
        except BaseException as exc:
            if log_path and not isinstance(exc, (KeyboardInterrupt, Interrupted)):
                # what the service said is usually the reason the engine side failed
                print(f"streamstyle: the service's log ({log_path}) ends with:\n"
                      f"{Path(log_path).read_text()[-2000:]}", file=sys.stderr)
            raise
    finally:
        _stop(proc, stop_timeout_s)
        shutil.rmtree(work, ignore_errors=True)


def _stop(proc: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; reaped either way (no zombie)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
