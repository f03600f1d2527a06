#!/usr/bin/env bash
# Session 8, GPU call O (the session's last ~300 s): ss_bell_push reads the reader's `consumed` only
# when the lane looks full, and ss_submit reads `watched until` only when the I/O thread sleeps.
# Two probes and the strict cuda-ipc test, their lines printed as they come.
set -uo pipefail
source scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
PROBES="c-back-to-back-spin c-60fps-yield" SS_DEBS=$(pwd)/.debs FRAMES=1000 FRAMES_60=600 PROBE_ARGS=--no-prompts \
  SS_PYTEST=1 SS_PYTEST_K="end_to_end_on_the_gpu" OUT=$OUT/check timeout 200 bash engine_plugins/vulkan/gpu-check.sh 2>&1 \
  | grep --line-buffered -E "^\| c-|^\| wake|^TIMING (acquire|submit)|^OVERHEAD|^CLIENT|passed|failed|assert [0-9]"
