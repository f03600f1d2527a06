#!/usr/bin/env bash
# Session 16, GPU call 2 (issue 13, speed): the padding written as one contiguous copy per plane
# (pad_planes), its kernels at 1920x1080, the host path per size, what runs outside the replay piece
# by piece (host_probe.py), `streamstyle bench` at 720p / 1080p, and the graph-path GPU tests.
set -uo pipefail
. scripts/device-env.sh
d=benchmarks/runs/2026-12-04-session16
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout 120 python3 -m pytest -q -m gpu tests/test_graph_path.py tests/test_stylizer.py > $OUT/tests.txt 2>&1; tail -1 $OUT/tests.txt
timeout 150 python3 benchmarks/profile_step.py --size 1920x1080 --top 30 > $OUT/profile.txt 2>&1
timeout 150 python3 benchmarks/profile_step.py --host-path > $OUT/host.txt 2>&1
timeout 120 python3 $d/host_probe.py > $OUT/probe.txt 2>&1
timeout 150 python3 -m streamstyle bench --sizes 720p,1080p --steps 2 --frames 200 > $OUT/bench.txt 2>&1
grep -E 'kernel time' $OUT/profile.txt; grep -i cat $OUT/profile.txt | head -3; cat $OUT/host.txt $OUT/probe.txt; tail -6 $OUT/bench.txt
