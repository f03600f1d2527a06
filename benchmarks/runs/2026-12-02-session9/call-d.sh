#!/usr/bin/env bash
# Session 9, GPU call D (issue 13): the few-step training step after the objective stopped waiting
# for the device (its draws and cuts uploaded from pinned memory, the corruption chosen on the host;
# call C's eager step: 1496 ms at batch 32 x 8 frames, 256x256).
set -uo pipefail
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout 150 python3 benchmarks/profile_train.py --frames 8 --batch 32 --phases few --sampler-steps 1,2,2,4 --reps 3 \
  --skip-render 2>&1 | grep -v USDT | tee $OUT/profile-d.txt | tail -5
