"""How long the service's answer path (encode a `done`, copy it into a doorbell lane) takes right
after each way the service could have waited for the GPU, with a reader process spinning on the
lane as libstreamstyle's I/O thread does.

Why: on the H200 machines the service's "send to rung" took ~30 us (benchmarks/NOTES.md v0.8), and on
the CI machine an encode and push after a 5 ms sleep took 31 us p50 against 2.5 us in a tight loop:
a thread that waited may run its first microseconds of Python cold. If a Python loop on
`event.query()` keeps the answer path warm where `event.synchronize()` does not, the service should
wait that way.

    python benchmarks/answer_warmth.py            # a GPU machine (the CPU runs the non-GPU waits only)
"""

from __future__ import annotations

import multiprocessing as mp
import time

import torch

from streamstyle.interop import doorbell as DB
from streamstyle.interop import protocol as P


def _reader(name: str, q) -> None:
    bell = DB.Doorbell.attach(name)
    lane, lat = bell.to_engine, []
    q.put("ready")
    while True:
        while not lane.pending():
            pass
        t = time.perf_counter_ns()
        msg = P.decode_raw(lane.pop())
        if msg["type"] == "stop":
            break
        lat.append((t - msg["t"]) / 1e3)
    q.put(sorted(lat))
    bell.close()


def _pct(xs: list[float]) -> str:
    xs = sorted(xs)
    return " / ".join(f"{xs[min(len(xs) - 1, int(f * len(xs)))]:6.1f}" for f in (0.1, 0.5, 0.9, 0.99))


def main(frames: int = 200) -> None:
    cuda = torch.cuda.is_available()
    waits = {"spin 20 us (warm)": ("spin", 20e-6), "sleep 5 ms": ("sleep", 5e-3), "spin 5 ms": ("spin", 5e-3)}
    if cuda:
        x = torch.randn(2048, 2048, device="cuda")
        reps = 1
        ev = torch.cuda.Event()
        torch.cuda.synchronize()
        while True:  # about 5 ms of device work
            t = time.perf_counter()
            for _ in range(reps):
                x.mul_(1.0000001)
            torch.cuda.synchronize()
            if time.perf_counter() - t > 4e-3:
                break
            reps *= 2
        waits |= {"event.synchronize": ("sync", reps), "event.query loop": ("query", reps)}
    print(f"{'wait':22} encode+push us p10 / p50 / p90 / p99      push to reader us p10 / p50 / p90 / p99")
    for name, (how, arg) in waits.items():
        bell = DB.Doorbell.create()
        q = mp.get_context("spawn").Queue()
        p = mp.get_context("spawn").Process(target=_reader, args=(bell.name, q))
        p.start()
        assert q.get(timeout=120) == "ready"
        push = []
        while len(push) < frames:
            if how in ("spin", "sleep"):
                end = time.perf_counter() + arg
                if how == "sleep":
                    time.sleep(arg)
                while time.perf_counter() < end:
                    pass
            else:
                for _ in range(arg):
                    x.mul_(1.0000001)
                ev.record()
                if how == "sync":
                    ev.synchronize()
                else:
                    while not ev.query():
                        pass
            t0 = time.perf_counter_ns()
            data = P.encode({"type": "done", "session": 1, "seq": len(push) + 1, "slot": 0, "late": False, "t": t0,
                             "timings": {"queue_ms": 0.1, "model_ms": 6.4, "write_ms": 0.01, "total_ms": 6.6}})
            if bell.to_engine.push(data):
                push.append((time.perf_counter_ns() - t0) / 1e3)
        while not bell.to_engine.push(P.encode({"type": "stop"})):
            pass
        lat = q.get(timeout=120)
        p.join()
        bell.close()
        print(f"{name:22} {_pct(push):40} {_pct(lat)}")


if __name__ == "__main__":
    main()
