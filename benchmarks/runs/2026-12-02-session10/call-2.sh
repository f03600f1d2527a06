#!/usr/bin/env bash
# Session 10, GPU call 2 (issue 13): call 1's recipe again, to ship (call 1's chosen weights did not
# all come back): the DiT and the refiner together from the shipped weights with history_noise 0,
# DiT lr 2e-4, 5.5 minutes; the shift chosen on the train split among +1..+3 by the tie rule
# (within 0.05 dB of the best PSNR, the steadiest); the held-out tables; then the gpu-marked graph
# tests and `streamstyle bench` (720p, 1080p, 2 steps) on the chosen weights.
set -uo pipefail
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
python3 -m streamstyle export --weights model/weights/default --out /root/hn0 --dtype bf16 --history-noise 0 | tail -1
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True BATCH=24 DIT=1 LR=2e-4 SHIFTS="1 2 3" POOL=512 BANK=256 timeout 470 bash scripts/gpu-train-refiner.sh $OUT/a 5 /root/hn0 2>&1 | tail -12
for s in 1 2 3; do echo "held s$s:"; tar xOf $OUT/a/reports.tar held-s$s.log | grep -E "OVERALL|MEDIAN"; done
k=$(cat $OUT/a/choice.txt); w=/root/w; mkdir -p $w
cp $OUT/a/ship-s$k/config.json $w/ && cat $OUT/a/ship-s$k/model.part-* > $w/model.safetensors
timeout 60 python3 -m pytest -q -m gpu tests/test_graph_path.py 2>&1 | tail -2
timeout 100 python3 -m streamstyle bench --weights $w --sizes 720p,1080p --steps 2 --frames 300 --json /root/bench.json 2>&1 | tail -8
(cd /root && tar rf $OUT/a/reports.tar bench.json) 2>/dev/null
ls $OUT/a $OUT/a/ship-s$k
