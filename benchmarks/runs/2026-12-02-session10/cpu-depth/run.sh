#!/usr/bin/env bash
# Session 10, CPU (issue 13): the refiner alone on exact latents from the shipped weights, as shipped
# (depth 0) and with two residual passes (depth 2), then the latent-ceiling table of each on the
# held-out scene; with SHIPPED=1 also the shipped weights' table. From the repository root.
# Usage: run.sh STEPS OUT  (this session: 300 with SHIPPED=1 -> 300-ceil-*.txt, 2500 -> 2500-ceil-*.txt)
set -euo pipefail
steps=${1:?usage: run.sh STEPS OUT}
out=${2:?usage: run.sh STEPS OUT}
for d in 0 2; do
  start=$(date +%s)
  python -m streamstyle train --out "$out/d$d" --init model/weights/default --device cpu --size 64 --frames 4 \
    --batch 4 --pool 64 --steps "$steps" --warmup 20 --lr 2e-3 --ema 0.99 --freeze-dit --exact-latents 1 \
    --refiner-depth $d --checkpoint-every 100000 --quiet 2>&1 | tail -2
  echo "d$d train wall $(( $(date +%s) - start )) s"
done
for d in 0 2; do
  python benchmarks/latent_ceiling.py --weights "$out/d$d" --size 64 --frames 8 2>&1 | tail -13 > "$out/ceil-d$d.txt"
done
if [ "${SHIPPED:-0}" = 1 ]; then
  python benchmarks/latent_ceiling.py --size 64 --frames 8 2>&1 | tail -13 > "$out/ceil-shipped.txt"
fi
