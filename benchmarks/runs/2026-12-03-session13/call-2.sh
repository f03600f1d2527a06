#!/usr/bin/env bash
# Session 13, GPU call 2 (issue 13), sent within the idle window after call 1 (whose training was
# cut by the script's own 330-s timeout during the evaluations, so its weights were lost): stage 6
# trained on with its recipe for 5 minutes (STEPS=190), shifts +0..+3, the chosen weights kept on
# the machine (/root/keep) for call 3.
. scripts/device-env.sh
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True BATCH=24 DIT=1 LR=2e-4 STEPS=190 SHIFTS="0 1 2 3" POOL=512 BANK=256 KEEP=/root/keep \
  timeout 560 bash scripts/gpu-train-refiner.sh $OUT/a 5 model/weights/default 2>&1 | tail -10
for s in 0 1 2 3; do echo "held s$s:"; tar xOf $OUT/a/reports.tar held-s$s.log | grep -E "OVERALL|MEDIAN"; done; ls $OUT/a
