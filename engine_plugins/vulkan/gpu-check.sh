#!/usr/bin/env bash
# gpu-check.sh: build the Vulkan bridge and run ssvk_host's CUDA half on the GPU machine at 1280x720 and
# 1920x1080 (50 frames each), then print a short table. Exit 0 only if every run printed "RESULT ok".
#
# Needs there: cmake and a C compiler; the NVIDIA driver (libcuda.so.1 and its Vulkan ICD); the Vulkan
# loader (Debian libvulkan1) and headers (Debian libvulkan-dev). Nothing of ZeroMQ or msgpack-c.
# If the loader is missing, put libvulkan1_*.deb and libvulkan-dev_*.deb in a folder and pass it:
#   VULKAN_DEBS=/path/to/debs engine_plugins/vulkan/gpu-check.sh
# (libvulkan1 is unpacked into /, as the device README says; the headers into the build folder).
#
# Optional, the whole chain through libstreamstyle and the service: where libzmq and msgpack-c are
# installed (Debian libzmq3-dev, libmsgpack-dev and what they pull in), ssvk_host is also built with its
# "session" mode; with a GPU service listening at SS_SERVICE_ADDRESS, e.g.
#   python -m streamstyle serve --bind ipc:///tmp/ss.sock --device cuda --no-prompts &
#   SS_SERVICE_ADDRESS=ipc:///tmp/ss.sock engine_plugins/vulkan/gpu-check.sh
# it runs 100 frames at each size through the service and adds their rows to the table.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${SSVK_BUILD:-/tmp/ssvk-gpu-build}
mkdir -p "$build"
cmake_args=(-DCMAKE_BUILD_TYPE=Release)
if [ -n "${VULKAN_DEBS:-}" ]; then
    for f in "$VULKAN_DEBS"/libvulkan1_*.deb; do dpkg -x "$f" /; done
    ldconfig
    for f in "$VULKAN_DEBS"/libvulkan-dev_*.deb; do dpkg -x "$f" "$build/vkroot"; done
    cmake_args+=(-DVulkan_INCLUDE_DIR="$build/vkroot/usr/include")
    lib=$(ls /usr/lib/x86_64-linux-gnu/libvulkan.so.1 2>/dev/null || true)
    [ -n "$lib" ] && cmake_args+=(-DVulkan_LIBRARY="$lib")
fi
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
cmake -S "$here" -B "$build" "${cmake_args[@]}" >"$build/cmake.log" 2>&1 || { cat "$build/cmake.log"; exit 1; }
cmake --build "$build" -j 4 >"$build/build.log" 2>&1 || { cat "$build/build.log"; exit 1; }
grep -h "CUDA declarations" "$build/cmake.log" || true

status=0
rows=()
for size in "1280 720" "1920 1080"; do
    set -- $size
    log="$build/host-$1x$2.log"
    if "$build/ssvk_host" cuda "$1" "$2" 50 >"$log" 2>&1 && grep -q "^RESULT ok" "$log"; then ok=ok; else ok=FAIL; status=1; fi
    echo "---- ssvk_host cuda $1 $2 50 ($ok)"; cat "$log"
    t=$(grep "^TIMING copy_in" "$log" || true)
    rows+=("$(printf '| %sx%s | %s | %s | %s | %s | %s |' "$1" "$2" \
        "$(sed -n 's/.*bytes=\([0-9]*\).*/\1/p' <<<"$t")" "$(sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p' <<<"$t")" \
        "$(sed -n 's/.*p90_ms=\([0-9.]*\).*/\1/p' <<<"$t")" "$(sed -n 's/.*GBps=\([0-9]*\).*/\1/p' <<<"$t")" "$ok")")
done
if [ -n "${SS_SERVICE_ADDRESS:-}" ]; then
    for size in "1280 720" "1920 1080"; do
        set -- $size
        log="$build/session-$1x$2.log"
        if "$build/ssvk_host" session "$SS_SERVICE_ADDRESS" "$1" "$2" 100 >"$log" 2>&1 && grep -q "^RESULT ok" "$log"; then ok=ok; else ok=FAIL; status=1; fi
        echo "---- ssvk_host session $SS_SERVICE_ADDRESS $1 $2 100 ($ok)"; cat "$log"
        t=$(grep "^TIMING frame" "$log" || true)
        rows+=("$(printf '| %sx%s session | frames done: %s | frame p50 %s ms | p90 %s ms | service included | %s |' "$1" "$2" \
            "$(sed -n 's/.*done=\([0-9]*\).*/\1/p' "$log" | head -1)" "$(sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p' <<<"$t")" \
            "$(sed -n 's/.*p90_ms=\([0-9.]*\).*/\1/p' <<<"$t")" "$ok")")
    done
fi
echo
grep -h "^DEVICE\|^CUDA" "$build"/host-1920x1080.log || true
echo "| size | slot bytes | copy_in p50 ms | p90 ms | GB/s | checks |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
exit $status
