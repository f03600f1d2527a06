"""Soak the service's edge: generated messages, one at a time, against a real child service.

The generator and the judging are the protocol fuzz test's (tests/fuzz_messages.py), here seeded
with `random.Random(--seed)` and run for as long as asked (the test sends 2,000 per CI run; a soak
is 100,000 or more). The service runs as `streamstyle serve` in its own process, with the tiny
model and, unless --no-prompts, the real prompt encoder; this process plays an engine that owns a
shared-memory ring whose unbroken frames run.

Reports: messages sent, answered, crashes (the service exited; it is started again and the soak
goes on), untyped replies (undecodable, an unknown type, or an error code the protocol does not
have), `internal` errors (a handler failed and the catch-all answered), hangs (no answer within
--timeout-s), and the service's resident memory at start, after the first --warm messages and at
the end. Exit status 1 if any crash, untyped reply, internal error or hang was seen.

    python benchmarks/fuzz_service.py --messages 100000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import zmq

from streamstyle.interop import create_ring
from streamstyle.interop import protocol as P
from streamstyle.kernels.writeback import output_bytes
from streamstyle.model.layout import FORMATS, reference_layout
from streamstyle.tests.fuzz_messages import Driver, Fuzzer


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Child:
    """`streamstyle serve` in its own process; its output goes to a log file."""

    def __init__(self, work: Path, preset: str, prompts: bool):
        self.work, self.starts = work, 0
        self.address = f"ipc://{work}/service.sock"
        self.config = work / "service.json"
        # Heartbeats as usual; a reap time long enough that a slow answer never drops the engine.
        self.config.write_text(json.dumps({"max_sessions": 4, "reap_after_ms": 600000,
                                           "recordings_dir": str(work / "recordings")}))
        self.args = ["--preset", preset, "--quiet", "--config", str(self.config)] + ([] if prompts else ["--no-prompts"])
        self.start()

    def start(self) -> None:
        ready = self.work / f"ready-{self.starts}"
        self.log = self.work / f"service-{self.starts}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "streamstyle", "serve", "--bind", self.address,
                                          "--ready-file", str(ready), *self.args], stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        end = time.monotonic() + 600
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("the service did not start; its log:\n" + self.log.read_text()[-3000:])
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def plausible_inputs(ring, layout, width: int, height: int, seed: int) -> None:
    """Every input slot filled with random but finite planes (depth in 1..21, motion still), so
    that the frames the generator leaves unbroken run like real ones."""
    g = torch.Generator().manual_seed(seed)
    for slot in range(ring.slots):
        planes = layout.view(ring.input(slot), width, height)
        for ch in layout.channels:
            dtype, _, unorm = FORMATS[ch.format]
            x = planes[ch.name]
            if unorm:
                x.copy_(torch.randint(0, 256, x.shape, generator=g, dtype=torch.int32).to(x.dtype))
            elif dtype == torch.int32:
                x.copy_(torch.randint(0, 40, x.shape, generator=g, dtype=torch.int32))
            else:
                x.copy_(torch.rand(x.shape, generator=g).to(x.dtype))
        planes["depth"].copy_(torch.rand(planes["depth"].shape, generator=g) * 20 + 1)
        planes["motion"].zero_()
        planes["normals"].copy_((torch.rand(planes["normals"].shape, generator=g) * 2 - 1).to(planes["normals"].dtype))


def connect(address: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    sock.send(P.encode({"type": "hello", "protocol": P.PROTOCOL_VERSION, "client": "fuzz-soak", "req": 0}))
    return sock


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout-s", type=float, default=10.0, help="an answer later than this is a hang")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--size", default="32x24", help="WxH of the ring's frames")
    ap.add_argument("--warm", type=int, default=1000, help="messages before the warm RSS figure")
    ap.add_argument("--no-prompts", action="store_true", help="serve without the prompt encoder")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))

    work = Path(tempfile.mkdtemp(prefix="streamstyle-fuzz-"))
    layout = reference_layout(w, h)
    ring = create_ring("shm", 3, layout.slot_bytes(w, h), output_bytes(w, h, "rgba8"))
    plausible_inputs(ring, layout, w, h, args.seed)
    empty = f"ss_soak_empty_{secrets.token_hex(4)}"
    os.close(os.open(f"/dev/shm/{empty}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    child = Child(work, args.preset, prompts=not args.no_prompts)
    crashes, exits = 0, []
    rss = {"start": rss_mb(child.proc.pid)}
    sock = connect(child.address)
    fuzzer = Fuzzer(ring.describe(), layout.to_dict(), w, h, empty_segment=empty, mark_ready=ring.mark_ready)
    driver = Driver(sock, fuzzer, timeout_s=args.timeout_s)
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    try:
        for i in range(args.messages):
            driver.send_one(rng)
            if not child.alive():
                crashes += 1
                exits.append((driver.tally.sent, child.proc.returncode, child.log.read_text()[-1500:]))
                print(f"service exited ({child.proc.returncode}) after message {driver.tally.sent}; restarting",
                      file=sys.stderr, flush=True)
                sock.close(0)
                child.start()
                sock = driver.sock = connect(child.address)
                fuzzer.sessions.clear()
            if i + 1 == args.warm:
                rss["warm"] = rss_mb(child.proc.pid)
            if (i + 1) % 10_000 == 0:
                t = driver.tally
                print(f"{i + 1} messages, {time.monotonic() - t0:.0f} s: crashes {crashes}, untyped {t.untyped}, "
                      f"internal {t.internal}, hangs {t.hangs}, service RSS {rss_mb(child.proc.pid):.0f} MB", flush=True)
        rss["end"] = rss_mb(child.proc.pid)
        sock.send(P.encode({"type": "hello", "protocol": P.PROTOCOL_VERSION, "req": 1}))
        alive_after = bool(sock.poll(10_000)) and child.alive()
    finally:
        sock.close(0)
        child.stop()
        ring.close()
        os.unlink(f"/dev/shm/{empty}")
    t, took = driver.tally, time.monotonic() - t0
    figures = {"messages_sent": t.sent, "answered": t.answers, "crashes": crashes, "untyped_replies": t.untyped,
               "internal_errors": t.internal, "hangs": t.hangs, "alive_after": alive_after,
               "rss_mb": {k: round(v, 1) for k, v in rss.items()},
               "rss_growth_after_warm_mb": round(rss["end"] - rss.get("warm", rss["start"]), 1),
               "seconds": round(took, 1), "messages_per_s": round(t.sent / took, 1),
               "answer_types": dict(t.types), "error_codes": dict(t.codes)}
    print(f"messages sent      {t.sent} ({t.answers} answered) in {took:.0f} s, {t.sent / took:.0f}/s")
    print(f"crashes            {crashes} (service exits)")
    print(f"untyped replies    {t.untyped}")
    print(f"internal errors    {t.internal}")
    print(f"hangs              {t.hangs} (no answer within {args.timeout_s:g} s)")
    print(f"service RSS        start {rss['start']:.0f} MB, after {args.warm} messages {rss.get('warm', float('nan')):.0f} MB, "
          f"end {rss['end']:.0f} MB")
    print(f"alive after        {alive_after}")
    print(f"answers            {dict(t.types)}")
    print(f"error codes        {dict(t.codes)}")
    for what, parts, answer in t.examples:
        print(f"  {what}: {parts!r} -> {answer!r}")
    for sent, code, log in exits:
        print(f"  exit {code} after message {sent}; the log ends:\n{log}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0 if t.clean and crashes == 0 and alive_after else 1


if __name__ == "__main__":
    sys.exit(main())
