#!/usr/bin/env bash
# Session 15, GPU call 1 (issue 13): the refiner kernels (the composite with object colours) against their reference
# on the GPU (and the graph path), then stage 8 grown with per-style object colours
# (`--id-colours 8`, COLOURS=8: added to the composite's fresh colour) and trained on with stage 6's recipe for 5 minutes (FIT=1), shifts
# +0..+3 chosen on the train split; the chosen weights kept in /root/keep for a second call.
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout 150 python3 -m pytest -q -m gpu tests/test_refiner_kernel.py tests/test_refiner_features.py tests/test_graph_path.py 2>&1 | tail -4
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True COLOURS=8 BATCH=24 DIT=1 LR=2e-4 STEPS=190 FIT=1 SHIFTS="0 1 2 3" \
  POOL=512 BANK=256 KEEP=/root/keep timeout 420 bash scripts/gpu-train-refiner.sh $OUT/a 5 2>&1 | tail -8
for s in 0 1 2 3; do echo "held s$s:"; tar xOf $OUT/a/reports.tar held-s$s.log | grep -E "OVERALL|MEDIAN|thermal|neon"; done; ls $OUT/a
