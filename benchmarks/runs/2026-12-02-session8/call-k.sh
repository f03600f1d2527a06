#!/usr/bin/env bash
# Session 8, GPU calls K and L: ss_submit rings the doorbell itself (K), and leaves the I/O thread asleep
# while the service watches the lane (L). The back-to-back and 60 fps probes
# (spinning and yielding), then the gpu-marked C tests and the rhythm test with SS_STRICT_TIMING=1,
# in gpu-check.sh's own environment (call J ran pytest outside it, so its test skipped: no libzmq).
# Run from the repository root, carrying .whl and .debs.
set -uo pipefail
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
source scripts/device-env.sh
L=$OUT/logs; mkdir -p $L
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $L/card.txt
grep -E "^(cpu|steal)" /proc/stat | head -1 > $L/stat0.txt
PROBES="c-back-to-back-spin c-60fps-spin c-60fps-yield" SS_DEBS=$(pwd)/.debs FRAMES=1000 FRAMES_60=600 PROBE_ARGS=--no-prompts \
  SS_PYTEST=1 SS_PYTEST_K="on_the_gpu or rhythm" OUT=$L/check \
  timeout 400 bash engine_plugins/vulkan/gpu-check.sh > $L/gpu-check.log 2>&1; echo "gpu-check rc $? at $(el) s"
grep -E "^(cpu|steal)" /proc/stat | head -1 > $L/stat1.txt; paste $L/stat0.txt $L/stat1.txt
grep -E "^\| (wake|c-|pytest)" $L/gpu-check.log | grep -v "| \(acquire\|poll\|output\)" | cut -c1-220
grep -E "worst:" $L/gpu-check.log | cut -c1-220 | head -12
grep -E "^TIMING|^OVERHEAD|^WORST|^CLIENT|^RHYTHM|passed|failed|Error|assert" $L/gpu-check.log | cut -c1-220 | head -40
find $L -name "*.json" -delete
(cd $OUT && tar czf logs.tgz logs && rm -rf logs)
