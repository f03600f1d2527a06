#!/usr/bin/env bash
# Session 16, GPU call 4 (issue 13, speed): the host path with the slot copied by the driver, the
# layout's size and hash remembered; the gpu-marked graph, stylizer and IPC tests; host_probe.py;
# `streamstyle bench` at 720p, 1080p and 4K (300 frames).
set -uo pipefail
. scripts/device-env.sh
d=benchmarks/runs/2026-12-04-session16
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout 150 python3 -m pytest -q -m gpu tests/test_graph_path.py tests/test_stylizer.py tests/test_gpu.py > $OUT/tests.txt 2>&1; tail -1 $OUT/tests.txt
timeout 150 python3 benchmarks/profile_step.py --host-path > $OUT/host.txt 2>&1
timeout 100 python3 $d/host_probe.py > $OUT/probe.txt 2>&1
timeout 240 python3 -m streamstyle bench --sizes 720p,1080p,4K --steps 2 --frames 300 > $OUT/bench.txt 2>&1
cat $OUT/host.txt $OUT/probe.txt; tail -8 $OUT/bench.txt
