#!/usr/bin/env bash
# Session 14, GPU call 2 (issue 13): `streamstyle bench` on the stage-8 weights (720p, 1080p, 4K, 2 steps).
set -uo pipefail
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout 200 python3 -m streamstyle bench --weights model/weights/default --sizes 720p,1080p,4K --steps 2 --frames 200 --json $OUT/bench.json 2>&1 | tail -10 | tee $OUT/bench.txt
