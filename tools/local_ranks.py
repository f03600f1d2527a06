"""`streamstyle train --nproc N`: N copies of the same command on this machine, each one rank of a
torch.distributed run, with the environment torchrun gives its workers (`RANK`, `WORLD_SIZE`,
`LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`). A rank is exactly what
`torchrun --nproc-per-node N -m streamstyle train ...` would start, so one code path serves both.

What must hold:
- Each rank runs in its own session (as torchrun's workers do), so a terminal's Ctrl-C reaches the
  launcher alone, and the launcher passes every stop signal on to every rank once
  (`signals.forwarded`): the ranks agree on a step boundary, rank 0 checkpoints, all exit with the
  same code, which the launcher returns. A second signal stops the ranks at once.
- When a rank fails (exits with anything but 0 or the agreed SIGINT stop's 130), the others are
  stopped (SIGTERM, then SIGKILL after `grace_s`) so that no rank waits forever on a collective
  with a dead peer; the launcher says which rank it was and returns that rank's status.
  Should the launcher die without unwinding (SIGKILL), each rank gets SIGTERM (Linux's
  parent-death signal, as `launch.child_service` arms it).
- On the CPU each rank gets an equal part of the cores (`OMP_NUM_THREADS`, unless already set),
  as torchrun does, so N ranks do not fight over the same cores.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Mapping, Sequence

from ..service.workers import die_with_parent
from .signals import exit_code, forwarded

# What a rank that stopped at an agreed step boundary on SIGINT exits with (on SIGTERM: 0); its
# peers stop at the same boundary, so it is no failure to act on.
STOPPED = exit_code(signal.SIGINT)


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now, for the ranks' rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, nproc: int, port: int, base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment of rank `rank` of `nproc` on this machine (torchrun's variables)."""
    env = dict(base)
    env.update(RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(nproc),
               GROUP_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    env.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off
    return env


def run_local(nproc: int, argv: Sequence[str], grace_s: float = 30.0, poll_s: float = 0.2) -> int:
    """Runs `python -m streamstyle *argv` as `nproc` ranks and waits for all of them. Returns 0
    when all succeed, else the first failing rank's exit code (a rank killed by signal n: 128 + n)."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "streamstyle", *argv], env=rank_env(r, nproc, port),
                              start_new_session=True, preexec_fn=die_with_parent()) for r in range(nproc)]
    failed: int | None = None
    stop_at: float | None = None
    with forwarded(lambda: [p.pid for p in procs if p.poll() is None]):
        try:
            while any(p.poll() is None for p in procs):
                for rank, p in enumerate(procs):
                    rc = p.poll()
                    if rc not in (None, 0, STOPPED) and failed is None:
                        failed = rc
                        how = f"by {signal.Signals(-rc).name}" if rc < 0 else f"with exit code {rc}"
                        print(f"streamstyle: rank {rank} of {nproc} ended {how}: stopping the other ranks",
                              file=sys.stderr, flush=True)
                        stop_at = time.monotonic() + grace_s
                        for other in procs:
                            if other.poll() is None:
                                other.send_signal(signal.SIGTERM)
                if stop_at is not None and time.monotonic() > stop_at:
                    for other in procs:
                        if other.poll() is None:
                            other.kill()
                time.sleep(poll_s)
        finally:
            for p in procs:  # only if this loop itself was broken: nothing may outlive the launcher
                if p.poll() is None:
                    p.kill()
                    p.wait()
    codes = [p.returncode for p in procs]
    if failed is not None:
        return _exit_status(failed)
    return _exit_status(next((c for c in codes if c != 0), 0))


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode
