#!/usr/bin/env bash
# Session 18, GPU call 3 (issue 13, speed): the prefetching Mix-FFN kernel as shipped: its
# gpu-marked test, the profile at 1920x1088 and 3840x2160, `streamstyle bench` at 720p/1080p/4K.
set -uo pipefail
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout 90 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_kernel_mixffn.py tests/test_graph_path.py 2>&1 | tail -1
timeout 60 python3 benchmarks/profile_step.py --size 1920x1088 --top 8 > $OUT/profile.txt 2>&1
timeout 60 python3 benchmarks/profile_step.py --size 3840x2160 --top 8 > $OUT/profile-4k.txt 2>&1
timeout 200 python3 -m streamstyle bench --sizes 720p,1080p,4K --steps 2 --frames 300 > $OUT/bench.txt 2>&1
for f in profile profile-4k; do grep "kernel time" $OUT/$f.txt; grep "_dwconv_gate" $OUT/$f.txt; done
grep -A4 "Through the service" $OUT/bench.txt
