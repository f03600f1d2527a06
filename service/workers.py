"""The worker processes behind a multi-worker front (`service.front`): one `streamstyle serve` per
device, each an ordinary service on a private address, started, watched and restarted here.

What must hold:
- a worker is the single service (`server.Service`), run with the front's effective config
  written to a file in the front's private run folder, except for what is its own: `bind` (a
  private `ipc://` socket in that folder; loopback TCP where there is no ipc), `device`, no
  workers of its own, no OSC, preview or CURVE keys (its address is private), metrics on a
  private loopback port when the front serves metrics (the front merges them), and on the CPU a
  share of the cores (`cpu_threads`) unless the config names a count;
- worker k's incarnation g numbers its sessions from `id_base` = (g * workers + k + 1) *
  SESSION_ID_SPAN on (`serve --session-id-base`): ids never collide across workers or restarts,
  so the front routes a session's messages by its id and never rewrites them;
- a worker never outlives the front: Linux's parent-death signal stops it, and `watch_parent`
  (the worker's own thread) elsewhere. Workers run in their own process group, so a terminal's
  Ctrl-C reaches the front alone, which then stops them in order;
- `exited` reports each worker whose process ended, once; `start` runs its next incarnation.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..interop.limits import MAX_ID
from .config import ServiceConfig, available_cpus

SESSION_ID_SPAN = 1 << 32  # session ids one worker incarnation may hand out


def die_with_parent():
    """A `preexec_fn`: the child gets SIGTERM when this thread's process dies, however it dies
    (Linux's PR_SET_PDEATHSIG, which follows the thread that started the child: call from the
    main thread). Elsewhere None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def watch_parent(pid: int, every_s: float = 0.5) -> threading.Thread:
    """In a worker: a daemon thread that stops this process (SIGTERM to itself, which the service
    turns into a clean stop) once its parent `pid` is gone."""
    def watch() -> None:
        while os.getppid() == pid:
            time.sleep(every_s)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="streamstyle-parent-watch", daemon=True)
    thread.start()
    return thread


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the worker binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Worker:
    """One worker slot: its device and, per incarnation, its process and address."""

    index: int
    device: str
    count: int  # workers behind the front (for the id ranges)
    address: str = ""
    metrics_port: int = 0
    incarnation: int = -1
    proc: subprocess.Popen | None = None
    ready: bool = False  # its welcome has come back: it takes sessions
    started_at: float = 0.0
    ready_at: float | None = None
    restarts: int = 0
    retry_at: float = 0.0  # while no process runs: when the next incarnation starts
    backoff_s: float = 0.0
    last_exit: int | None = None
    welcome: dict | None = None
    sessions: dict = field(default_factory=dict)  # session id -> pixels, as the front placed them
    opening: int = 0  # opens sent to it, not yet answered
    opening_pixels: int = 0

    @property
    def gpu(self) -> int | None:
        """The CUDA device index this worker serves (None on the CPU)."""
        if not self.device.startswith("cuda"):
            return None
        return int(self.device.split(":")[1]) if ":" in self.device else 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None

    @property
    def id_base(self) -> int:
        return (self.incarnation * self.count + self.index + 1) * SESSION_ID_SPAN

    @property
    def load(self) -> tuple[int, int, int]:
        """What placement minimises: sessions (open and opening), then pixels, then the index."""
        return (len(self.sessions) + self.opening, sum(self.sessions.values()) + self.opening_pixels, self.index)

    @property
    def state(self) -> str:
        if self.ready:
            return "ready"
        return "starting" if self.running else "restarting"


class WorkerPool:
    """The workers of one front. `worker_args`: `serve` flags every worker takes as the front
    was given them (--no-prompts, --quiet, --log-json)."""

    def __init__(self, config: ServiceConfig, run_dir: Path, worker_args: tuple[str, ...] = (), metrics: bool = False):
        self.config, self.run_dir, self.worker_args, self.metrics = config, Path(run_dir), tuple(worker_args), metrics
        devices = config.worker_devices
        self.workers = [Worker(k, d, len(devices)) for k, d in enumerate(devices)]
        on_cpu = sum(d == "cpu" for d in devices)
        # Workers on the CPU share its cores; each takes its share unless the config names a count.
        self.cpu_threads = config.cpu_threads or max(1, available_cpus() // max(1, on_cpu))

    def worker_config(self, w: Worker) -> dict:
        cfg = dataclasses.replace(
            self.config, bind=w.address, device=w.device, workers=0, gpus="", curve_secret_key=None,
            curve_public_key=None, osc_port=0, preview_port=0, metrics_port=w.metrics_port, studio_host="127.0.0.1",
            cpu_threads=self.cpu_threads if w.device == "cpu" else self.config.cpu_threads)
        return dataclasses.asdict(cfg.validate())

    def start(self, w: Worker) -> None:
        """Run worker `w`'s next incarnation (it binds, loads its model and serves; the front
        knows it is ready when it answers hello)."""
        w.incarnation += 1
        if w.id_base + SESSION_ID_SPAN > MAX_ID:
            raise RuntimeError(f"worker {w.index} has restarted too often to number its sessions")
        if sys.platform.startswith("linux"):
            w.address = f"ipc://{self.run_dir}/worker-{w.index}.sock"
        else:
            w.address = f"tcp://127.0.0.1:{free_port()}"
        w.metrics_port = free_port() if self.metrics else 0
        path = self.run_dir / f"worker-{w.index}.json"
        path.write_text(json.dumps(self.worker_config(w)))
        cmd = [sys.executable, "-m", "streamstyle", "serve", "--config", str(path), "--worker", str(w.index),
               "--session-id-base", str(w.id_base), "--parent-pid", str(os.getpid()), *self.worker_args]
        w.proc = subprocess.Popen(cmd, preexec_fn=die_with_parent(), start_new_session=True)
        w.ready, w.welcome, w.started_at, w.ready_at = False, None, time.monotonic(), None

    def exited(self) -> list[Worker]:
        """Workers whose process has ended since the last call (each once); their `proc` is
        cleared and `last_exit` holds the exit status."""
        out = []
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is not None:
                w.last_exit, w.proc, w.ready = w.proc.returncode, None, False
                out.append(w)
        return out

    def kill(self, w: Worker) -> None:
        """SIGKILL (a worker that does not come up); `exited` reports it."""
        if w.proc is not None and w.proc.poll() is None:
            w.proc.kill()

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM to every worker (each finishes its frame under way), then SIGKILL to those
        still running after `timeout_s`; every process reaped."""
        procs = [w.proc for w in self.workers if w.proc is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.monotonic() + timeout_s
        for p in procs:
            try:
                p.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for w in self.workers:
            w.proc, w.ready = None, False
