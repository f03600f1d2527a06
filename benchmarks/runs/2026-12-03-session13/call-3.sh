#!/usr/bin/env bash
# Session 13, GPU call 3 (issue 13), sent within the idle window after call 2: call 2's chosen
# weights (/root/keep) trained on once more the same way, 5 minutes (STEPS=190), shifts +0..+3.
# Its chosen weights are stage 7 (model/weights/default).
. scripts/device-env.sh
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True BATCH=24 DIT=1 LR=2e-4 STEPS=190 SHIFTS="0 1 2 3" POOL=512 BANK=256 KEEP=/root/keep2 \
  timeout 560 bash scripts/gpu-train-refiner.sh $OUT/a 5 /root/keep 2>&1 | tail -10
for s in 0 1 2 3; do echo "held s$s:"; tar xOf $OUT/a/reports.tar held-s$s.log | grep -E "OVERALL|MEDIAN"; done; ls $OUT/a
