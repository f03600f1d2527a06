#!/usr/bin/env bash
# Session 15, GPU call 2 (issue 13): what object colours cost on the frame path. Stage 8 grown with
# `id_colours` 8 (its style matrix set to random values, so the table is not zero) against stage 8
# itself, `streamstyle bench` at 720p and 1080p (2 steps, 200 frames), run A, B, A.
set -uo pipefail
. scripts/device-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
python3 - <<'PY'
import torch
from streamstyle.model.weights import load_weights, save_weights
m = load_weights("model/weights/default", partial=True, changes={"id_colours": 8})
with torch.no_grad():
    m.refiner.style_colours.weight.normal_(0.0, 0.05)
save_weights(m, "/tmp/c8")
print("grown:", m.config.id_colours, sum(p.numel() for p in m.refiner.parameters()), "refiner parameters")
PY
for w in model/weights/default /tmp/c8 model/weights/default; do
  echo "== $w"
  timeout 150 python3 -m streamstyle bench --weights $w --sizes 720p,1080p --steps 2 --frames 200 2>&1 | tail -6
done | tee $OUT/bench.txt
