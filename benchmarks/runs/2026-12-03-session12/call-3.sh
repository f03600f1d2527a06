#!/usr/bin/env bash
# Session 12, GPU call 3 (issue 13): call 2's chosen weights trained on once more the same way,
# 5 minutes (STEPS=190), shifts +0..+3, held-out tables.
set -uo pipefail
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True BATCH=24 DIT=1 LR=2e-4 STEPS=190 SHIFTS="0 1 2 3" POOL=512 BANK=256 \
  timeout 480 bash scripts/gpu-train-refiner.sh $OUT/a 5 model/weights/default 2>&1 | tail -10
for s in 0 1 2 3; do echo "held s$s:"; tar xOf $OUT/a/reports.tar held-s$s.log | grep -E "OVERALL|MEDIAN"; done
