#!/usr/bin/env bash
# Panda3D on the GPU machine: the demo scene rendered on the NVIDIA EGL device at 1280x720 and
# 1920x1080, each frame's G-buffers read back, packed and copied with torch into a CUDA IPC ring,
# stylized by a real service in a child process; prints engine render / read / pack / copy / service /
# model / round-trip times (tools/panda3d_gpu_check.py).
#
# The machine reaches no registry, so everything comes carried (device README), from the repository
# root: .gl/ (the EGL loader .deb files), .p3d/ (engine_plugins/panda3d/carry-panda3d.sh: stripped
# Panda3D for cp312 + the panda3d-gltf wheel), .whl/ (pyzmq for cp312, as scripts/gpu-check.sh uses).
# Usage: engine_plugins/panda3d/gpu-check.sh [OUT_DIR] [extra panda3d_gpu_check arguments]
# CPU check (no GPU, no carried files needed): BACKEND=shm DEVICE=cpu EGL_DEVICE= SIZES=128x96 FRAMES=3 \
#   EXPECT= engine_plugins/panda3d/gpu-check.sh /tmp/out --weights W
set -uo pipefail
out=${1:-${OUT:-/tmp/streamstyle-panda3d-gpu}}
shift || true
mkdir -p "$out"
exec > >(tee -a "$out/panda3d-gpu.log") 2>&1
export PYTHONUNBUFFERED=1
if ls .gl/*.deb >/dev/null 2>&1 && ! ldconfig -p | grep -q libEGL.so.1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
vendor=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
if [ -f "$vendor" ] && [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ]; then
  export __EGL_VENDOR_LIBRARY_FILENAMES=$vendor
fi
site=${SITE:-/tmp/streamstyle-p3d-site}
if ls .p3d/panda3d-*-stripped.tar.xz >/dev/null 2>&1 && ! python3 -c "import panda3d.core" 2>/dev/null; then
  mkdir -p "$site"
  tar -C "$site" -xJf .p3d/panda3d-*-stripped.tar.xz
  wheels=$(ls .p3d/*.whl .whl/*.whl 2>/dev/null)
  [ -n "$wheels" ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" $wheels
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! python3 -c "import streamstyle.tools" 2>/dev/null; then
  pkg=$(mktemp -d)
  ln -s "$(pwd)" "$pkg/streamstyle"
  export PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv
python3 -c "import panda3d, zmq, torch; print('panda3d', panda3d.__file__, '| torch', torch.__version__, \
'| cuda', torch.cuda.is_available())" || exit 2
args=(--backend "${BACKEND:-cuda-ipc}" --device "${DEVICE:-cuda}" --sizes "${SIZES:-1280x720,1920x1080}"
      --frames "${FRAMES:-60}" --json "$out/panda3d-gpu.json")
egl=${EGL_DEVICE-0}
[ -n "$egl" ] && args+=(--egl-device "$egl")
expect=${EXPECT-NVIDIA}
[ -n "$expect" ] && args+=(--expect-renderer "$expect")
python3 -m streamstyle.tools.panda3d_gpu_check "${args[@]}" "$@" 2>&1 | grep -v "^Known pipe types\|^  eglGraphicsPipe\|^(all display modules\|inotify\|/dev/input"
exit "${PIPESTATUS[0]}"
