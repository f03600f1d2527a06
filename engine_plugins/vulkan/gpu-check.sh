#!/usr/bin/env bash
# gpu-check.sh: the engine side on the GPU machine, in one run, ending with one table:
#  1. the Vulkan bridge's copy into a cuda-ipc ring slot (ssvk_host cuda, 50 frames) at 1280x720 and
#     1920x1080, checked byte for byte, timed with CUDA events (target <= 0.1 ms at 1080p);
#  2. libstreamstyle over cuda-ipc against a real GPU service (benchmarks/handoff_probe.py --client c,
#     which runs engine_plugins/c/tests/probe.c): its overhead per frame over the service's total_ms,
#     split hop by hop with CLOCK_MONOTONIC stamps from both processes (targets: <= 50 us p50,
#     <= 100 us p99), back to back and paced at 60 fps, the render thread spinning on ss_poll or
#     yielding between calls; the render-thread calls' p50/p99 in those runs (target <= 20 us p99), and
#     how many submits still had to wake the I/O thread (its anticipation of the frame rhythm); each with
#     the session's doorbell (docs/protocol.md) and once over ZeroMQ alone (--doorbell off);
#  3. the Python client's split for comparison, and `ss_probe wake`: what one thread hand-off costs on
#     this machine (a frame's round trip has seven);
#  4. optional, SS_SERVICE_ADDRESS set: the whole chain through the Vulkan bridge (ssvk_host session);
#  5. optional, SS_PYTEST=1: the gpu-marked C client and bridge tests and the frame-rhythm test with
#     SS_STRICT_TIMING=1 (every render-thread call <= 20 us p99 asserted, the overhead targets too);
#     SS_PYTEST_K (a pytest -k expression) runs only some of them.
# Exit 0 only if every run passed its checks (the targets are printed, not enforced here).
#
# Needs there: cmake, a C compiler, python3 with this package's dependencies (torch), the NVIDIA driver
# (libcuda.so.1 and its Vulkan ICD). What Debian packages are missing (the Vulkan loader and headers,
# libzmq, msgpack-c, pkgconf) can be carried: run engine_plugins/vulkan/fetch-gpu-debs.sh DIR here, carry DIR,
# and pass it:   SS_DEBS=DIR engine_plugins/vulkan/gpu-check.sh
# (the loaders, libvulkan1 and the GL vendor-neutral libraries whose dispatch NVIDIA's Vulkan driver
# loads, are unpacked into /, as the device README says; everything else into the build folder.)
# VULKAN_DEBS=DIR is the older name of SS_DEBS. FRAMES (default 500) sets the probe's frames per run
# (back to back), FRAMES_60 (default 300) those of each 60 fps run; PROBE_ARGS is added to every probe's
# arguments (e.g. --no-prompts where no prompt table or text encoder was carried); PROBES, a space-separated
# list of the probe runs' names below, runs only those.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build=${SSVK_BUILD:-/tmp/ssvk-gpu-build}
out=${OUT:-$build/out}
frames=${FRAMES:-500}
frames60=${FRAMES_60:-300}
read -r -a probe_args <<<"${PROBE_ARGS:-}"
debs=${SS_DEBS:-${VULKAN_DEBS:-}}
mkdir -p "$build" "$out"
cmake_args=(-DCMAKE_BUILD_TYPE=Release)
if [ -n "$debs" ]; then
    root="$build/debroot"
    mkdir -p "$root"
    for f in "$debs"/*.deb; do
        case "$(basename "$f")" in
            libvulkan1_*) dpkg -x "$f" /; dpkg -x "$f" "$root" ;; # (in the build folder too: libvulkan-dev's link there)
            libglvnd0_*|libglx0_*|libgl1_*|libegl1_*|libopengl0_*|libgles2_*) dpkg -x "$f" / ;;
            *) dpkg -x "$f" "$root" ;;
        esac
    done
    ldconfig
    lib="$root/usr/lib/x86_64-linux-gnu"
    export LD_LIBRARY_PATH="$lib:$root/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
    # libzmq.pc names its static dependencies' .pc files, which the -dev packages would bring; the
    # shared library finds those libraries at run time on LD_LIBRARY_PATH
    [ -f "$lib/pkgconfig/libzmq.pc" ] && sed -i '/^Requires.private/d' "$lib/pkgconfig/libzmq.pc"
    export PKG_CONFIG_PATH="$lib/pkgconfig:$root/usr/share/pkgconfig:${PKG_CONFIG_PATH:-}"
    export PKG_CONFIG_SYSROOT_DIR="$root" # the .pc files say /usr
    # the same for every CMake run below, the tests' own builds included
    export PATH="$PATH:$root/usr/bin" CPATH="$root/usr/include:${CPATH:-}" LIBRARY_PATH="$lib:${LIBRARY_PATH:-}"
    export CMAKE_PREFIX_PATH="$root/usr:${CMAKE_PREFIX_PATH:-}"
    cmake_args+=(-DCMAKE_LIBRARY_PATH="$lib" -DVulkan_INCLUDE_DIR="$root/usr/include")
    vk=$(ls /usr/lib/x86_64-linux-gnu/libvulkan.so.1 2>/dev/null || true)
    [ -n "$vk" ] && cmake_args+=(-DVulkan_LIBRARY="$vk")
fi
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
if ! python3 -c "import streamstyle" 2>/dev/null; then # the repository is the package: make it importable
    mkdir -p "$build/py" && ln -sfn "$repo" "$build/py/streamstyle"
    export PYTHONPATH="$build/py:${PYTHONPATH:-}"
fi
export PYTHONUNBUFFERED=1
cmake -S "$here" -B "$build" "${cmake_args[@]}" >"$build/cmake.log" 2>&1 || { cat "$build/cmake.log"; exit 1; }
cmake --build "$build" -j 8 >"$build/build.log" 2>&1 || { cat "$build/build.log"; exit 1; }
grep -h "CUDA declarations\|ssvk_frames" "$build/cmake.log" || true
probe_build="$build/c"
have_client=0
if cmake -S "$repo/engine_plugins/c" -B "$probe_build" "${cmake_args[@]}" >"$build/cmake-c.log" 2>&1 &&
   cmake --build "$probe_build" -j 8 --target ss_probe ss_cuda_e2e_test >"$build/build-c.log" 2>&1; then
    have_client=1
else
    echo "NOTE libstreamstyle did not build here (libzmq, msgpack-c?): the client runs are skipped"; tail -5 "$build/cmake-c.log"
fi

status=0
rows=()
row() { rows+=("$(printf '| %s |' "$*")"); }

# 1. the bridge's copy
for size in "1280 720" "1920 1080"; do
    set -- $size
    log="$build/host-$1x$2.log"
    if "$build/ssvk_host" cuda "$1" "$2" 50 >"$log" 2>&1 && grep -q "^RESULT ok" "$log"; then ok=ok; else ok=FAIL; status=1; fi
    echo "---- ssvk_host cuda $1 $2 50 ($ok)"; cat "$log"
    t=$(grep "^TIMING copy_in" "$log" || true)
    c=$(sed -n 's/^BRIDGE .*copies=\([0-9]*\).*/\1/p' "$log")
    row "bridge copy_in $1x$2 | copies $c | p50 $(sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p' <<<"$t") ms | p90 $(sed -n 's/.*p90_ms=\([0-9.]*\).*/\1/p' <<<"$t") ms | $(sed -n 's/.*GBps=\([0-9]*\).*/\1/p' <<<"$t") GB/s | target <= 0.1 ms at 1080p | $ok"
done

# 2, 3. the clients' overhead, split; the render-thread calls
if [ "$have_client" = 1 ]; then
    timeout 60 "$probe_build/ss_probe" wake 300 2000 | tee "$build/wake.log"
    while read -r l; do row "wake ${l#WAKE }"; done < <(grep "^WAKE" "$build/wake.log")
    run_probe() { # name, then handoff_probe.py's arguments
        local name=$1; shift
        if [ -n "${PROBES:-}" ] && [[ " $PROBES " != *" $name "* ]]; then return 0; fi
        local log="$build/probe-$name.log"
        if python3 "$repo/benchmarks/handoff_probe.py" --device cuda --size 1920x1080 --frames "$frames" \
                --probe-exe "$probe_build/ss_probe" --out "$out" "${probe_args[@]}" "$@" >"$log" 2>&1; then ok=ok; else ok=FAIL; status=1; fi
        echo "---- handoff_probe $name ($ok)"; cat "$log"
        local over=$(grep "^  overhead" "$log" || true) sub=$(grep "^TIMING submit" "$log" || true)
        local bell=$(sed -n 's/.*frames_taken_from_the_doorbell=\([0-9]*\).*/\1/p' "$log" | head -1)
        row "$name | overhead p50 $(awk '{print $3}' <<<"$over") us | p99 $(awk '{print $6}' <<<"$over") us | submit p99 $(sed -n 's/.*p99_us=\([0-9.]*\).*/\1/p' <<<"$sub") us | frames via doorbell ${bell:-?} | targets 50 / 100 / 20 us | $ok"
        local cl=$(grep "^CLIENT" "$log" || true)
        [ -n "$cl" ] && row "$name | ${cl#CLIENT } | | | submits that woke the I/O thread, its time awake | $ok"
        for call in acquire poll output; do
            local t=$(grep "^TIMING $call" "$log" || true)
            [ -n "$t" ] && row "$name | $call p50 $(sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p' <<<"$t") us | p99 $(sed -n 's/.*p99_us=\([0-9.]*\).*/\1/p' <<<"$t") us | | target p99 <= 20 us | $ok"
        done
        return 0 # (the Python client prints no TIMING lines: the loop's last test is false, and set -e would stop here)
    }
    run_probe c-back-to-back-spin --client c --poll spin
    run_probe c-60fps-spin --client c --poll spin --interval-ms 16.7 --frames "$frames60"
    run_probe c-60fps-yield --client c --poll yield --interval-ms 16.7 --frames "$frames60"
    run_probe c-60fps-yield-zmq-only --client c --poll yield --interval-ms 16.7 --frames "$frames60" --doorbell off
    run_probe python-60fps --client python --interval-ms 16.7 --frames "$frames60"
    run_probe python-60fps-zmq-only --client python --interval-ms 16.7 --frames "$frames60" --doorbell off
fi

# 4. optional: the whole chain through the bridge and a service someone started
if [ -n "${SS_SERVICE_ADDRESS:-}" ]; then
    for size in "1280 720" "1920 1080"; do
        set -- $size
        log="$build/session-$1x$2.log"
        if "$build/ssvk_host" session "$SS_SERVICE_ADDRESS" "$1" "$2" 100 >"$log" 2>&1 && grep -q "^RESULT ok" "$log"; then ok=ok; else ok=FAIL; status=1; fi
        echo "---- ssvk_host session $SS_SERVICE_ADDRESS $1 $2 100 ($ok)"; cat "$log"
        t=$(grep "^TIMING frame" "$log" || true)
        row "session $1x$2 | done $(sed -n 's/.*done=\([0-9]*\).*/\1/p' "$log" | head -1) | frame p50 $(sed -n 's/.*p50_ms=\([0-9.]*\).*/\1/p' <<<"$t") ms | p90 $(sed -n 's/.*p90_ms=\([0-9.]*\).*/\1/p' <<<"$t") ms | service included | $ok"
    done
fi
# 5. optional, SS_PYTEST=1: the GPU tests, with the strict render-thread targets, in this environment
if [ "${SS_PYTEST:-0}" = 1 ]; then
    log="$build/pytest.log"
    if (cd "$repo" && SS_STRICT_TIMING=1 python3 -m pytest -q -s tests/test_c_client.py tests/test_vulkan_bridge.py \
            -k "${SS_PYTEST_K:-on_the_gpu or rhythm}") >"$log" 2>&1; then ok=ok; else ok=FAIL; status=1; fi
    echo "---- pytest, SS_STRICT_TIMING=1 ($ok)"; tail -60 "$log"
    row "pytest gpu + rhythm, strict | $(tail -1 "$log") | | | | $ok"
fi
echo
grep -h "^DEVICE\|^CUDA" "$build"/host-1920x1080.log || true
echo "| what | | | | | checks |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
exit $status
