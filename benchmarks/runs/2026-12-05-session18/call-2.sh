#!/usr/bin/env bash
# Session 18, GPU call 2 (issue 13, the token grid): stage 8 (model/weights/default) trained on with
# its own recipe (session 14's call 1, FIT=1; 4 minutes here, what the lease had left) and the token-grid loss on (GRID=5), the
# shipped history shift (+3) only; stage 8 itself evaluated alongside on the same held-out seeds
# and sizes (its token_grid was never measured on a GPU), niced, while the run trains.
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
nice -n 10 python3 -m streamstyle eval --weights model/weights/default --seeds 1000000,1000001 \
  --size 512x512,1280x720 --frames 8 --device cuda --quiet --json $OUT/base-held.json \
  --markdown $OUT/base-held.md > $OUT/base-held.log 2>&1 &
base=$!
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True BATCH=24 DIT=1 LR=2e-4 STEPS=190 FIT=1 SHIFTS="3" POOL=512 \
  BANK=256 GRID=${GRID:-5} timeout 470 bash scripts/gpu-train-refiner.sh $OUT/a 4 2>&1 | tail -8
wait $base
echo "stage 8:"; grep -E "OVERALL" $OUT/base-held.log
echo "with the grid loss:"; tar xOf $OUT/a/reports.tar held-s3.log | grep -E "OVERALL"
python3 - $OUT <<'PY'
import json, sys, tarfile
out = sys.argv[1]
base = json.load(open(f"{out}/base-held.json"))["overall"]
new = json.load(tarfile.open(f"{out}/a/reports.tar").extractfile("held-s3.json"))["overall"]
for k in ("psnr", "ssim", "adherence", "warp_ratio", "token_grid", "baseline_token_grid"):
    print(f" {k:22s} stage 8 {base.get(k, float('nan')):8.3f}   grid-trained {new.get(k, float('nan')):8.3f}")
PY
