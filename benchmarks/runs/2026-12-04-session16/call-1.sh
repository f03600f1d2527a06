#!/usr/bin/env bash
# Session 16, GPU call 1 (issue 13, speed): where stage 8's 1080p frame goes. The eager step's kernels
# at 1920x1080 and 1920x1088 (the padding's cost inside the frame), the host path (replay against
# the whole step, per size) and today's `streamstyle bench` baseline at 720p and 1080p.
set -uo pipefail
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout 200 python3 benchmarks/profile_step.py --size 1920x1080 --size 1920x1088 --top 45 --json $OUT/profile.json > $OUT/profile.txt 2>&1
timeout 150 python3 benchmarks/profile_step.py --host-path --json $OUT/host.json > $OUT/host.txt 2>&1
timeout 150 python3 -m streamstyle bench --sizes 720p,1080p --steps 2 --frames 200 > $OUT/bench.txt 2>&1
grep -E 'kernel time' $OUT/profile.txt; cat $OUT/host.txt; tail -6 $OUT/bench.txt
