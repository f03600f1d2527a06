#!/usr/bin/env bash
# Session 7, GPU calls E-I (F-H after the median rhythm learner; G, H after the wake probe fix; H with the per-call context switches): issue 14: gpu-check.sh whole (the strict C and bridge tests included):
# strict e2e test re-run after its 20-frame warm-up, and the new C-vs-Python output comparison test.
set -uo pipefail
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
source scripts/device-env.sh
L=$OUT/logs; mkdir -p $L
nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.draw --format=csv,noheader | tee $L/card.txt
head -1 /proc/stat > $L/stat-before.txt
python3 -m streamstyle serve --bind ipc:///tmp/ssd.sock --device cuda --no-prompts --quiet --ready-file /tmp/ssd.ready > $L/serve.log 2>&1 &
SS_SERVICE_ADDRESS=ipc:///tmp/ssd.sock PROBES="c-back-to-back-spin c-60fps-spin c-60fps-yield" SS_DEBS=$(pwd)/.debs FRAMES=1000 FRAMES_60=600 PROBE_ARGS=--no-prompts SS_PYTEST=1 OUT=$L/check \
  timeout 260 bash engine_plugins/vulkan/gpu-check.sh > $L/gpu-check.log 2>&1; echo "gpu-check rc $? at $(el) s"
grep -E "^\| |CLIENT|^FAIL|passed|failed" $L/gpu-check.log | grep -v "^| c-.*| \(acquire\|poll\)" | cut -c1-220
grep -E "WORST|overhead|p50|p99|PASS|FAIL|Error|assert" $L/gpu-check.log | tail -40
grep -B2 -A12 "^E  " $L/gpu-check.log | head -60
cp /tmp/ssvk-gpu-build/pytest.log $L/ 2>/dev/null
kill %1 2>/dev/null
head -1 /proc/stat > $L/stat-after.txt
python3 - $L <<'PY'
import sys
b, a = (list(map(int, open(f"{sys.argv[1]}/stat-{w}.txt").read().split()[1:])) for w in ("before", "after"))
d = [y - x for x, y in zip(b, a)]
print(f"host CPU over the run: steal {100 * d[7] / sum(d):.2f}% of all vCPU time, idle {100 * d[3] / sum(d):.1f}%")
PY
echo "=== done at $(el) s"
find $L -name "*.json" -size +3M -delete
(cd $OUT && tar czf logs.tgz logs && rm -rf logs)
