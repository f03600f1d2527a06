"""End-to-end service timing: the service in its own process, this process as the engine.

Renders a handful of distinct reference-engine frames once (on the device), then submits frames in
lockstep through the real client and service over the chosen ring (CUDA IPC on a GPU, shared memory
on the CPU), switching prompts during the run. Reports per frame: service time (frame received to
done sent) p50/p99, model time, handoff overhead (service time outside the model), the engine's
round trip, and fps. First checks one frame against the model run in this process.

    python benchmarks/bench_service.py --device cuda --size 720p --frames 1000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from streamstyle.model.weights import shipped_weights
from streamstyle.tools.bench import service_run
from streamstyle.tools.cli import parse_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=parse_size, action="append")
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--preset", default="default", help="untrained weights of this preset, when no weights are shipped")
    ap.add_argument("--weights", help="a checkpoint (default: the shipped default model, else --preset untrained)")
    ap.add_argument("--no-prompts", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    weights = args.weights or shipped_weights()
    sizes = [(-(-w // 16) * 16, -(-h // 16) * 16) for w, h in args.size or [(1280, 720)]]
    rows = service_run(sizes, args.steps, args.frames, args.device, str(weights) if weights else None, args.preset,
                       prompts=not args.no_prompts)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"\nService end to end on {dev} ({weights or args.preset + ' untrained'} model, service defaults: kernels auto, "
          "CUDA graphs on a GPU; lockstep engine)")
    print(f"{'size':>10} {'fps':>7} {'svc p50':>8} {'svc p99':>8} {'model':>8} {'handoff p50/p99 us':>19} {'rtt p50':>8} {'late':>5}")
    for r in rows:
        print(f"{r['size']:>10} {r['fps']:>7.1f} {r['service_p50_ms']:>8.2f} {r['service_p99_ms']:>8.2f} "
              f"{r['model_p50_ms']:>8.2f} {r['handoff_p50_us']:>9.0f}/{r['handoff_p99_us']:<9.0f} "
              f"{r['round_trip_p50_ms']:>8.2f} {r['late']:>5}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": dev, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
