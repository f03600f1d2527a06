"""How long the service loop can wait to take Python's GIL back beside a busy studio thread.

The loop releases the GIL at every large numpy or torch copy and every socket call; when another
thread is running Python code meanwhile, the loop gets the GIL back only when that thread is made
to give it up, after the interpreter's switch interval. This times a copy of `--mb` MB plus a yield
(what the loop does when it copies a recorded slot) alone, and beside a thread busy in Python,
for each switch interval asked (the service runs with service.server.GIL_SWITCH_INTERVAL_S).

    python benchmarks/gil_probe.py --intervals 5,1,0.5,0.1
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import numpy as np


def probe(interval_s: float | None, mb: float, reps: int) -> tuple[float, float]:
    """(p50, p99) in ms of one copy and yield; interval_s None: no busy thread."""
    stop = threading.Event()
    busy = None
    if interval_s is not None:
        sys.setswitchinterval(interval_s)

        def spin():
            x = 0
            while not stop.is_set():
                for i in range(1000):
                    x += i

        busy = threading.Thread(target=spin, daemon=True)
        busy.start()
    src = np.ones(int(mb * (1 << 20)), np.uint8)
    dst = np.empty_like(src)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        time.sleep(0)
        times.append((time.perf_counter() - t0) * 1e3)
        time.sleep(0.002)
    stop.set()
    if busy is not None:
        busy.join()
    times.sort()
    return times[len(times) // 2], times[min(len(times) - 1, int(0.99 * len(times)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--intervals", default="5,0.5", help="switch intervals to try, ms")
    ap.add_argument("--mb", type=float, default=2.0)
    ap.add_argument("--reps", type=int, default=300)
    args = ap.parse_args()
    before = sys.getswitchinterval()
    p50, p99 = probe(None, args.mb, args.reps)
    print(f"{args.mb:g} MB copy and yield, alone: p50 {p50:.3f} ms  p99 {p99:.3f} ms")
    for ms in (float(x) for x in args.intervals.split(",")):
        p50, p99 = probe(ms / 1000, args.mb, args.reps)
        print(f"beside a busy Python thread, switch interval {ms:g} ms: p50 {p50:.3f} ms  p99 {p99:.3f} ms")
    sys.setswitchinterval(before)


if __name__ == "__main__":
    main()
