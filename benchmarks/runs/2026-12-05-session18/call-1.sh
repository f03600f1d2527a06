#!/usr/bin/env bash
# Session 18, GPU call 1 (issue 13, speed): the block's last residual fused with the next block's
# first norm (gpu-marked adaln, graph and stylizer tests; the profile at 1920x1088; `streamstyle
# bench` at 720p, 1080p and 4K), and the Mix-FFN prefetch candidate's sweep (sweep.py).
set -uo pipefail
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee $OUT/card.txt
timeout 150 python3 -m pytest -q -m gpu -rfE --tb=short -p no:cacheprovider tests/test_kernel_adaln.py \
  tests/test_graph_path.py tests/test_stylizer.py tests/test_gpu.py > $OUT/tests.txt 2>&1; tail -1 $OUT/tests.txt
timeout 150 python3 benchmarks/runs/2026-12-05-session18/sweep.py > $OUT/sweep.txt 2>&1
timeout 60 python3 benchmarks/profile_step.py --size 1920x1088 --top 14 > $OUT/profile.txt 2>&1
timeout 200 python3 -m streamstyle bench --sizes 720p,1080p,4K --steps 2 --frames 300 > $OUT/bench.txt 2>&1
grep -A16 "kernel time" $OUT/profile.txt | head -18; grep -A12 "Through the service" $OUT/bench.txt | head -5; tail -14 $OUT/sweep.txt
