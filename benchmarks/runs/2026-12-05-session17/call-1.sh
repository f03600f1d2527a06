#!/usr/bin/env bash
# Session 17, GPU call 1 (issue 13): the strip-walking Mix-FFN kernel against the old one (sweep at
# three grids), its GPU test, then the shipped model's (stage 8) per-style stills on the GPU.
set -uo pipefail
. scripts/device-env.sh
D=benchmarks/runs/2026-12-05-session17
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > $OUT/card.txt
timeout 300 python3 $D/sweep.py 2>&1 | grep -v Warn | tee $OUT/sweep.txt | tail -20
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_kernel_mixffn.py 2>&1 | tail -2
python3 -c "import PIL" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/pillow*.whl
mkdir -p /tmp/stills
timeout 200 python3 -m streamstyle eval-media --device cuda --no-video --images /tmp/stills 2>&1 | tail -3
(cd /tmp/stills && tar cf $OUT/stills.tar *.png && ls | wc -l)
