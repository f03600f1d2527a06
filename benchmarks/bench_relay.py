"""What the multi-worker front's relay adds to a round trip, on the CPU.

Starts `streamstyle serve --workers 1` (a front and one worker process, the tiny model), and talks
to the same worker two ways from this process: through the front's public address, and straight to
the worker's private address (the front's `stats` names it). First checks that a frame comes back
the same both ways (same frames, same seed), then times, interleaved so that the machine's load
falls on both alike:
- a request round trip (`params` with no change, answered `ok` by the worker): the relay's cost
  alone, two extra ZeroMQ hops and the front's Python per message, each way;
- a frame round trip (submit to `done`, tiny model, 16x16), where the model's time is added.

    python benchmarks/bench_relay.py --requests 2000 --frames 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from streamstyle.engine_plugins.reference_engine import CameraPath, Renderer, Scene
from streamstyle.engine_plugins.reference_engine.gbuffers import to_slot
from streamstyle.interop.client import Client
from streamstyle.model.layout import reference_layout
from streamstyle.tools.launch import child_service

W = H = 16


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def frame_rtt(client, session, planes) -> tuple[float, np.ndarray]:
    slot = session.acquire_slot(timeout_s=30)
    to_slot(planes, session.layout, session.ring.input(slot))
    t0 = time.perf_counter()
    ev = client.wait(session, session.submit(slot), timeout_s=60)
    ms = (time.perf_counter() - t0) * 1000
    assert ev.status == "done", (ev.status, ev.reason, ev.message)
    return ms, session.output(ev.slot).copy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    scene = Scene.generate(3, objects=10)
    renderer = Renderer(scene, CameraPath("handheld", seed=3, extent=scene.extent), W, H)
    planes = [renderer.render(i) for i in range(4)]
    with child_service(["--workers", "1", "--preset", args.preset, "--no-prompts", "--quiet"]) as address:
        via = Client(address, name="via-front", timeout_s=60)
        worker = via.stats()["service"]["workers"][0]
        direct = Client(worker["address"], name="direct", timeout_s=60)
        layout = reference_layout(W, H)
        sv = via.open_session(W, H, layout, seed=7)
        sd = direct.open_session(W, H, layout, seed=7)
        for i in range(3):  # correctness first: the relay hands over the worker's answers unchanged
            _, a = frame_rtt(via, sv, planes[i])
            _, b = frame_rtt(direct, sd, planes[i])
            if not np.array_equal(a, b):
                raise SystemExit(f"frame {i}: the output through the front differs from the worker's own")
        req = {"via": [], "direct": []}
        for i in range(args.requests + 50):
            for name, client, session in (("via", via, sv), ("direct", direct, sd)):
                t0 = time.perf_counter()
                client.request({"type": "params", "session": session.id, "params": {}})
                if i >= 50:
                    req[name].append((time.perf_counter() - t0) * 1e6)
        frames = {"via": [], "direct": []}
        for i in range(args.frames + 10):
            for name, client, session in (("via", via, sv), ("direct", direct, sd)):
                ms, _ = frame_rtt(client, session, planes[i % len(planes)])
                if i >= 10:
                    frames[name].append(ms)
        sv.close()
        sd.close()
        via.close()
        direct.close()
    out = {"requests": args.requests, "frames": args.frames, "size": f"{W}x{H}", "preset": args.preset}
    for kind, data, unit in (("request", req, "us"), ("frame", frames, "ms")):
        for name in ("via", "direct"):
            out[f"{kind}_{name}_p50_{unit}"] = statistics.median(data[name])
            out[f"{kind}_{name}_p99_{unit}"] = pct(data[name], 0.99)
        out[f"{kind}_added_p50_{unit}"] = out[f"{kind}_via_p50_{unit}"] - out[f"{kind}_direct_p50_{unit}"]
    print(f"relay on the CPU, {args.requests} request and {args.frames} frame round trips each way, interleaved")
    print(f"{'':>22} {'p50':>10} {'p99':>10}")
    for kind, unit in (("request", "us"), ("frame", "ms")):
        for name, label in (("direct", "straight to the worker"), ("via", "through the front")):
            print(f"{kind + ' ' + label:>40} {out[f'{kind}_{name}_p50_{unit}']:>9.1f}{unit} "
                  f"{out[f'{kind}_{name}_p99_{unit}']:>9.1f}{unit}")
        print(f"{kind + ': the relay adds (p50)':>40} {out[f'{kind}_added_p50_{unit}']:>9.1f}{unit}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
