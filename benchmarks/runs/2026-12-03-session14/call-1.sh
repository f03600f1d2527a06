#!/usr/bin/env bash
# Session 14, GPU call 1 (issue 13): stage 7 (model/weights/default) trained on with stage 6's
# recipe for 5 minutes with `--fit-steps` (FIT=1: the cosine's length fitted to the minutes after
# 10 steps, its first run on a GPU), shifts +0..+3 chosen on the train split.
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True BATCH=24 DIT=1 LR=2e-4 STEPS=190 FIT=1 SHIFTS="0 1 2 3" POOL=512 BANK=256 \
  timeout 540 bash scripts/gpu-train-refiner.sh $OUT/a 5 2>&1 | tail -10
for s in 0 1 2 3; do echo "held s$s:"; tar xOf $OUT/a/reports.tar held-s$s.log | grep -E "OVERALL|MEDIAN"; done; ls $OUT/a
