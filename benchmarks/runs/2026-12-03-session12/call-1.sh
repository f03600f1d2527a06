#!/usr/bin/env bash
# Session 12, GPU call 1 (issue 13): stage 5 (the shipped weights) trained on, the DiT and the
# refiner together as in session 10's call 2 (lr 2e-4, refiner 20x, batch 24, a pool of 512 clips),
# but with the cosine's length set to what 6 minutes hold (STEPS=225, ~1.6 s a step) so that the
# learning rate anneals to its 0.1x floor by the end instead of staying near its peak; the shift
# chosen on the train split among +0..+3 (tie rule); the held-out tables. No bench here.
set -uo pipefail
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True BATCH=24 DIT=1 LR=2e-4 STEPS=225 SHIFTS="0 1 2 3" POOL=512 BANK=256 \
  timeout 575 bash scripts/gpu-train-refiner.sh $OUT/a 6 model/weights/default 2>&1 | tail -14
for s in 0 1 2 3; do echo "held s$s:"; tar xOf $OUT/a/reports.tar held-s$s.log | grep -E "OVERALL|MEDIAN"; done
ls $OUT/a $OUT/a/ship-s*
