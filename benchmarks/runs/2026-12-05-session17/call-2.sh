#!/usr/bin/env bash
# Session 17, GPU call 2 (issue 13, speed): the strip Mix-FFN kernel at its swept tile (8x64x17/4)
# through the whole frame: the gpu-marked kernel, graph, stylizer and GPU tests; the per-kernel
# profile at 1920x1088; `streamstyle bench` at 720p, 1080p and 4K (300 frames through the service).
set -uo pipefail
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee $OUT/card.txt
timeout 170 python3 -m pytest -q -m gpu -rfE --tb=short -p no:cacheprovider tests/test_kernel_mixffn.py \
  tests/test_graph_path.py tests/test_stylizer.py tests/test_gpu.py > $OUT/tests.txt 2>&1; tail -1 $OUT/tests.txt
timeout 90 python3 benchmarks/profile_step.py --size 1920x1088 --top 12 > $OUT/profile.txt 2>&1
timeout 260 python3 -m streamstyle bench --sizes 720p,1080p,4K --steps 2 --frames 300 > $OUT/bench.txt 2>&1
grep -B2 -A14 "dwconv\|kernel" $OUT/profile.txt | head -30; tail -8 $OUT/bench.txt
