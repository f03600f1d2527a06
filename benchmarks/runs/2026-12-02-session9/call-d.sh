#!/usr/bin/env bash
# Session 9, GPU call D (issue 13): does a larger batch buy frames/s? A few-step training step at
# batch 48 x 8 frames (256x256), compiled only (it took 62 GB at batch 32 in call C).
set -uo pipefail
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 280 python3 benchmarks/profile_train.py --frames 8 --batch 48 --phases few --sampler-steps 1,2,2,4 --reps 2 \
  --skip-render --compile --no-eager 2>&1 | grep -v USDT | tee $OUT/profile-48.txt | tail -12
