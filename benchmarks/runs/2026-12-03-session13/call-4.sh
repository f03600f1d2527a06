#!/usr/bin/env bash
# Session 13, GPU call 4 (issue 13), on what device time was left (~170 s after the start): the
# gpu-marked graph tests (the hard prompt switch's reset through the captured graph, now on a
# prompt table of the tiny model's length) and `streamstyle bench` on the stage-7 weights.
set -uo pipefail
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout 60 python3 -m pytest -q -rs -m gpu tests/test_graph_path.py tests/test_gpu.py -k "graph or prompt" 2>&1 | tail -4 | tee $OUT/tests.txt
timeout 110 python3 -m streamstyle bench --weights model/weights/default --sizes 720p,1080p,4K --steps 2 --frames 200 --json $OUT/bench.json 2>&1 | tail -10 | tee $OUT/bench.txt
