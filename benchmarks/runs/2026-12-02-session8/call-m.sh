#!/usr/bin/env bash
# Session 8, GPU call M (issue 13): the DiT and the refiner together for 5 minutes from the shipped
# weights (DIT=1: every step a few-step rollout of a pool's 8-frame clips), then the history shift
# chosen on the train split among +1..+3 and the held-out tables at 512x512 and 1280x720.
# Run from the repository root carrying .whl (the pyzmq wheel and prompts.safetensors).
set -uo pipefail
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
DIT=1 SHIFTS="1 2 3" POOL=512 BANK=256 timeout 570 bash scripts/gpu-train-refiner.sh $OUT/m 5 2>&1 | tail -20
ls -la $OUT/m
