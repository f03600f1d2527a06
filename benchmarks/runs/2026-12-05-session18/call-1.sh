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
timeout 60 python3 benchmarks/profile_step.py --size 3840x2160 --top 14 > $OUT/profile-4k.txt 2>&1
# the baseline on the same card: the DiT before the fusion (session 17's model/dit.py)
cp model/dit.py /tmp/fused_dit.py && cp benchmarks/runs/2026-12-05-session18/old_dit.py model/dit.py
timeout 60 python3 benchmarks/profile_step.py --size 1920x1088 --top 14 > $OUT/profile-base.txt 2>&1
timeout 60 python3 benchmarks/profile_step.py --size 3840x2160 --top 14 > $OUT/profile-4k-base.txt 2>&1
cp /tmp/fused_dit.py model/dit.py
timeout 200 python3 -m streamstyle bench --sizes 720p,1080p,4K --steps 2 --frames 300 > $OUT/bench.txt 2>&1
for f in profile-base profile profile-4k-base profile-4k; do echo "$f: $(grep "kernel time" $OUT/$f.txt)"; done; grep -A4 "kernel time" $OUT/profile.txt | tail -4; grep -A12 "Through the service" $OUT/bench.txt | head -5; tail -14 $OUT/sweep.txt
