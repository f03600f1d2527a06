#!/usr/bin/env bash
# Session 9, GPU call A (issue 13): the DiT and the refiner together from the shipped weights
# (DIT=1: every step the service's few-step rollout over a pool's 8-frame clips), 6 minutes, then
# the history shift chosen on the train split among 0..2 and the held-out tables at 512x512 and
# 1280x720. Run from the repository root carrying .whl (the pyzmq wheel and prompts.safetensors).
set -uo pipefail
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
DIT=1 SHIFTS="0 1 2" POOL=512 BANK=256 timeout 560 bash scripts/gpu-train-refiner.sh $OUT/a 6 2>&1 | tail -20
tar xOf $OUT/a/reports.tar metrics.jsonl | python3 -c "
import json, sys, statistics as s
r = [json.loads(l) for l in sys.stdin]
print('steps', len(r), 'median frames/s', round(s.median(x['frames_per_s'] for x in r)))
for x in r[:3] + r[len(r)//2:len(r)//2+1] + r[-3:]:
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in x.items()})
"
ls -la $OUT/a
