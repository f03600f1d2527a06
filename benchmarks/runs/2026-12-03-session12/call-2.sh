#!/usr/bin/env bash
# Session 12, GPU call 2 (issue 13): call 1's chosen weights (stage 6 candidate, now in
# model/weights/default) trained on again the same way for 4 minutes (STEPS=150: the cosine
# anneals within the run), shifts +0..+3; then the gpu-marked graph tests and `streamstyle bench`
# at 720p, 1080p and 4K on the weights it came from (the architecture is the same).
set -uo pipefail
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout 60 python3 -m pytest -q -m gpu tests/test_graph_path.py 2>&1 | tail -2
timeout 150 python3 -m streamstyle bench --weights model/weights/default --sizes 720p,1080p,4K --steps 2 --frames 300 --json /root/bench.json 2>&1 | tail -10
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True BATCH=24 DIT=1 LR=2e-4 STEPS=150 SHIFTS="0 1 2 3" POOL=512 BANK=256 \
  timeout 360 bash scripts/gpu-train-refiner.sh $OUT/a 4 model/weights/default 2>&1 | tail -10
for s in 0 1 2 3; do echo "held s$s:"; tar xOf $OUT/a/reports.tar held-s$s.log | grep -E "OVERALL|MEDIAN"; done
(cd /root && tar rf $OUT/a/reports.tar bench.json) 2>/dev/null; ls $OUT/a
