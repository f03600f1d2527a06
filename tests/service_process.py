"""`streamstyle serve` as a real child process for the tests that need one (a second process,
a real socket, a service that can be killed or restarted at a fixed address).

One class for every such test: it starts the command with the given flags (and a JSON config
file when `config` is given), waits for the ready file, keeps the service's output in a log
file whose end goes into any start-up error, and `stop()` ends it with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path


class ServiceProcess:
    def __init__(self, work: Path, address: str, *serve_args: str, config: dict | None = None,
                 timeout_s: float = 180.0):
        self.address = address
        stamp = time.monotonic_ns()
        ready = work / f"ready-{stamp}"
        args = [sys.executable, "-m", "streamstyle", "serve", "--bind", address, "--ready-file", str(ready),
                "--quiet", *serve_args]
        if config:
            cfg = work / f"config-{stamp}.json"
            cfg.write_text(json.dumps(config))
            args += ["--config", str(cfg)]
        self.log = work / f"service-{stamp}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        end = time.monotonic() + timeout_s
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"the service did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
