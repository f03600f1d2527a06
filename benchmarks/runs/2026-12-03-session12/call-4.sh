#!/usr/bin/env bash
# Session 12, GPU call 4 (issue 13): the shipped stage-6 weights (call 3's): the gpu-marked graph
# tests, then `streamstyle bench` at 720p, 1080p and 4K through the service, 2 steps, 300 frames.
set -uo pipefail
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout 50 python3 -m pytest -q -m gpu tests/test_graph_path.py 2>&1 | tail -2
timeout 170 python3 -m streamstyle bench --sizes 720p,1080p,4K --steps 2 --frames 300 --json $OUT/bench.json 2>&1 | tail -8
