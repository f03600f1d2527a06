#!/usr/bin/env bash
# Session 16, GPU call 3: the host pieces before a graphed replay, torch's against the driver's (host_probe2.py).
set -uo pipefail
. scripts/device-env.sh
timeout 200 python3 benchmarks/runs/2026-12-04-session16/host_probe2.py 2>&1 | tee $OUT/probe2.txt
