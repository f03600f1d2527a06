#!/usr/bin/env bash
# Session 7, GPU call J (the session's last 261 s): after ss_poll takes doorbell answers itself:
# the strict cuda-ipc end-to-end test, then the back-to-back and 60 fps yielding probes.
set -uo pipefail
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
source scripts/device-env.sh
L=$OUT/logs; mkdir -p $L
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L/card.txt
PROBES="c-back-to-back-spin c-60fps-yield" SS_DEBS=$(pwd)/.debs FRAMES=1000 FRAMES_60=600 PROBE_ARGS=--no-prompts SS_PYTEST=0 OUT=$L/check \
  timeout 100 bash engine_plugins/vulkan/gpu-check.sh > $L/gpu-check.log 2>&1; echo "gpu-check rc $? at $(el) s"
grep -E "^\| (wake|c-)" $L/gpu-check.log | grep -v "| \(acquire\|poll\|output\)" | cut -c1-200
grep -E "worst:" $L/gpu-check.log | cut -c1-200 | head -6
SS_STRICT_TIMING=1 timeout 60 python3 -m pytest -q -s tests/test_c_client.py -k "end_to_end_on_the_gpu" > $L/pytest.log 2>&1; echo "pytest rc $? at $(el) s"
grep -E "^TIMING|^OVERHEAD|^WORST|^CLIENT|passed|failed" $L/pytest.log | head -20
find $L -name "*.json" -delete
(cd $OUT && tar czf logs.tgz logs && rm -rf logs)
