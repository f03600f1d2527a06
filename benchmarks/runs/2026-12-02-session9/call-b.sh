#!/usr/bin/env bash
# Session 9, GPU call B (issue 13): where a few-step training step's time goes (8-frame clips at
# 256x256, the shipped recipe's sampler steps), at batch 16 and 32 with a profile of one step, then 64.
set -uo pipefail
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
python3 benchmarks/profile_train.py --frames 8 --batch 16,32 --phases few --sampler-steps 1,2,2,4 --reps 3 \
  --profile 30 > $OUT/profile.txt 2>&1
grep -v USDT $OUT/profile.txt | tail -60
python3 benchmarks/profile_train.py --frames 8 --batch 64 --phases few --sampler-steps 1,2,2,4 --reps 2 \
  --skip-render 2>&1 | grep -v USDT | tail -6
