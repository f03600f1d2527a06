#!/usr/bin/env bash
# Session 9, GPU call C (issue 13): a few-step training step eager and compiled (`train --compile`),
# batch 32 x 8 frames at 256x256; then call A's run again (DiT and refiner from the shipped weights,
# a pool of 512 clips from 256 shots) compiled, for what the call's 585 s leave after the evaluations, and its held-out tables.
# Run from the repository root carrying .whl (the pyzmq wheel and prompts.safetensors).
set -uo pipefail
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout 200 python3 benchmarks/profile_train.py --frames 8 --batch 32 --phases few --sampler-steps 1,2,2,4 --reps 2 \
  --skip-render --compile 2>&1 | grep -v USDT | tee $OUT/profile-compile.txt | tail -9
ok=$(grep -c "compiled, batch 32" $OUT/profile-compile.txt)
minutes=$(python3 -c "print(round(max(1.0, (585 - $SECONDS - 170) / 60), 2))"); echo "training for $minutes min"
COMPILE=$([ "$ok" = 1 ] && echo 1 || echo 0) DIT=1 SHIFTS="0 1 2" POOL=512 BANK=256 \
  timeout $(( 585 - SECONDS )) bash scripts/gpu-train-refiner.sh $OUT/c $minutes 2>&1 | tail -12
tar xOf $OUT/c/reports.tar metrics.jsonl | python3 -c "
import json, sys, statistics as s
r = [json.loads(l) for l in sys.stdin]
print('steps', len(r), 'median frames/s', round(s.median(x['frames_per_s'] for x in r)))
for x in r[:2] + r[len(r)//2:len(r)//2+1] + r[-2:]:
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in x.items()})
"
