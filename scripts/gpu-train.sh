#!/usr/bin/env bash
# The default training recipe on one GPU, within the device lease: fine-tune from the shipped
# weights (the refiner starts fresh), few-step rollouts of 8-frame clips, then export in bf16 and a
# quick held-out evaluation. Usage: scripts/gpu-train.sh OUT [MINUTES] [INIT]
# On the project's GPU machine (no registry): carry .whl/ (pyzmq wheel, prompts.safetensors).
set -euo pipefail
out=${1:?usage: scripts/gpu-train.sh OUT [MINUTES] [INIT]}
minutes=${2:-7.5}
init=${3:-model/weights/default}
. "$(dirname "$0")/device-env.sh"
mkdir -p "$out"
nvidia-smi --query-gpu=name,clocks.sm,power.draw --format=csv,noheader | tee "$out/card.txt" || true
start=$(date +%s)
python3 -m streamstyle train --out "$out/run" --init "$init" --device cuda --size 256 --frames 8 --batch 32 \
  --steps "${STEPS:-200}" --lr 1e-4 --refiner-lr-scale 10 --warmup 20 --ema 0.99 --distill 1.0 \
  --sampler-steps 1,2,2,4 --bank 256 --time-limit "$minutes" --checkpoint-every 100000 --quiet 2>&1 | tail -5
echo "train wall: $(( $(date +%s) - start )) s"
python3 -m streamstyle export --weights "$out/run" --out "$out/ship" --dtype bf16
rm -f "$out/run/optimizer.safetensors" "$out/run/raw.safetensors" "$out/run/model.safetensors" \
  "$out/run/config.json" "$out/run/train_state.json"  # at most 8 files come back
# Files come back from the GPU machine at most 16 MiB each: the weights travel in parts
# (cat "$out"/ship/model.part-* > model.safetensors).
split -b 15M -d "$out/ship/model.safetensors" "$out/ship/model.part-"
python3 -m streamstyle eval --weights "$out/ship" --device cuda --size 256x256 --frames 8 --quiet \
  --json "$out/eval-quick.json" 2>&1 | tail -12 || true
rm -f "$out/ship/model.safetensors"
echo "total wall: $(( $(date +%s) - start )) s"
