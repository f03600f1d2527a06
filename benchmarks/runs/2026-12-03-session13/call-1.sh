#!/usr/bin/env bash
# Session 13, GPU call 1 (issue 13): what session 12 could not run on a GPU (the gpu-marked graph
# tests, with the hard prompt switch's reset through the captured graph, and `streamstyle bench` on
# the shipped stage-6 weights themselves), then stage 6 trained on once more with its recipe,
# 4 minutes (STEPS=150: the cosine anneals within the run), shifts +0..+3, the chosen weights kept
# on the machine (/root/keep) for the next call.
set -uo pipefail
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout 90 python3 -m pytest -q -rs -m gpu tests/test_graph_path.py 2>&1 | tail -4
timeout 150 python3 -m streamstyle bench --weights model/weights/default --sizes 720p,1080p,4K --steps 2 --frames 300 --json /root/bench.json 2>&1 | tail -10
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True BATCH=24 DIT=1 LR=2e-4 STEPS=150 SHIFTS="0 1 2 3" POOL=512 BANK=256 KEEP=/root/keep \
  timeout 330 bash scripts/gpu-train-refiner.sh $OUT/a 4 model/weights/default 2>&1 | tail -10
for s in 0 1 2 3; do echo "held s$s:"; tar xOf $OUT/a/reports.tar held-s$s.log | grep -E "OVERALL|MEDIAN"; done
(cd /root && tar rf $OUT/a/reports.tar bench.json) 2>/dev/null; ls $OUT/a
