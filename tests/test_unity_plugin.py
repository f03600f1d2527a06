"""The Unity native rendering plugin (engine_plugins/unity/Native): CMake builds libStreamStyleUnity over
the Vulkan bridge's per-frame driver and libstreamstyle with -Werror, and unity_host plays Unity for it:
Unity's interfaces implemented over a real Vulkan device (lavapipe here), the plugin loaded with dlopen
before the device exists, the device made through the plugin's interception, the render events issued
with real images, and frames stylized by the real CPU service over shm through the bridge's host half.
The composites it reads back are compared byte for byte with what the Python client gets for the same
inputs and seed. The C# bindings of the plugin are checked against the C structs under mono.

Skips, saying what is missing, without cmake, the Vulkan headers and a Vulkan driver, libzmq or
msgpack-c, which .ci/run installs from Debian.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .service_process import ServiceProcess
from .test_c_client import _missing as _c_missing
from .test_vulkan_bridge import _missing as _vk_missing

UNITY_NATIVE = Path(__file__).resolve().parent.parent / "engine_plugins" / "unity" / "Native"
UNITY_DIR = UNITY_NATIVE.parent
W, H = 64, 48


def _missing() -> str | None:
    return _vk_missing() or _c_missing()


pytestmark = pytest.mark.skipif(_missing() is not None, reason=f"the Unity plugin cannot be built: {_missing()}")


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unity-native")
    cfg = subprocess.run(["cmake", "-S", str(UNITY_NATIVE), "-B", str(out), "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
                         capture_output=True, text=True, timeout=300)
    assert cfg.returncode == 0, cfg.stdout + cfg.stderr
    made = subprocess.run(["cmake", "--build", str(out), "-j", "2"], capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stdout + made.stderr  # -Wall -Wextra -Werror
    return out


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    work = tmp_path_factory.mktemp("unity-service")
    address = f"ipc://{work}/svc.sock"
    svc = ServiceProcess(work, address, "--preset", "tiny", "--no-prompts")
    yield svc
    svc.stop()


def _checks(out: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^CHECK (\S+) (.*)$", out, re.M)}


def test_the_plugin_exports_only_its_entry_points(build):
    table = subprocess.run(["nm", "-D", "--defined-only", str(build / "libStreamStyleUnity.so")], capture_output=True,
                           text=True, check=True).stdout
    exported = sorted(line.split()[-1] for line in table.splitlines() if len(line.split()) == 3)
    assert {"UnityPluginLoad", "UnityPluginUnload"} <= set(exported)
    assert all(n.startswith(("Unity", "StreamStyleUnity_")) for n in exported), exported
    needed = subprocess.run(["readelf", "-d", str(build / "libStreamStyleUnity.so")], capture_output=True, text=True,
                            check=True).stdout
    assert "libstreamstyle.so.1" in needed and "libvulkan.so.1" in needed  # one libstreamstyle for C# and the plugin


def test_the_plugin_stylizes_frames_as_the_python_client_does(build, service, tmp_path):
    """unity_host: the device's extensions added by the interception, the event configured, refusals, then
    frames through the plugin; every composite equals the Python client's output for the same frames."""
    import numpy as np

    from streamstyle.interop.client import Client
    from streamstyle.model.layout import reference_layout

    n = 4
    res = subprocess.run([str(build / "unity_host"), str(build / "libStreamStyleUnity.so"), service.address,
                          str(tmp_path), str(n), str(W), str(H)], capture_output=True, text=True, timeout=600)
    print(res.stdout)
    if "no Vulkan device" in res.stdout:
        pytest.skip(f"no usable Vulkan device: {res.stdout.strip()}")
    assert res.returncode == 0 and res.stdout.rstrip().endswith("RESULT ok"), res.stdout + res.stderr[-4000:]
    checks = _checks(res.stdout)
    for name in ("plugin_load", "device_extensions", "device_event", "attach", "frames", "wrong_texture", "unload"):
        assert checks.get(name, "").startswith("ok"), (name, res.stdout)
    assert "timeline=1" in checks["device_extensions"]
    stats = dict(kv.split("=") for kv in re.search(r"^STATS (.*)$", res.stdout, re.M).group(1).split())
    assert stats["sent"] == stats["done"] == stats["composited"] == str(n) and stats["cuda"] == "0"

    layout = reference_layout(W, H)
    with Client(service.address) as client:
        session = client.open_session(W, H, layout, seed=11, params={"deadline_ms": 30000})
        for i in range(n):
            data = (tmp_path / f"in{i}.bin").read_bytes()
            assert len(data) == layout.slot_bytes(W, H)
            slot = session.acquire_slot(timeout_s=10)
            session.ring.input(slot)[: len(data)] = np.frombuffer(data, dtype=np.uint8)
            ev = client.wait(session, session.submit(slot), timeout_s=120)
            assert ev.status == "done"
            want = np.asarray(session.output(ev.slot)).reshape(-1).tobytes()
            got = (tmp_path / f"out{i}.bin").read_bytes()
            assert got == want, f"frame {i}: the plugin's composite differs from the Python client's output"


@pytest.mark.skipif(shutil.which("mcs") is None or shutil.which("mono") is None,
                    reason="mono is not installed (apt-get install mono-mcs mono-runtime)")
def test_the_csharp_plugin_bindings_match_the_c_structs(build, tmp_path):
    """Runtime/StreamStyleUnityNative.cs's structs against streamstyle_unity.h's (offsets from the C
    compiler), and the bindings loading the real plugin under mono: a call without Unity answers
    plainly instead of crashing."""
    exe = tmp_path / "MonoSmoke.exe"
    sources = sorted(str(p) for p in (UNITY_DIR / "Runtime").glob("*.cs")) + [str(UNITY_DIR / "Tests~" / "MonoSmoke.cs")]
    res = subprocess.run(["mcs", "-warnaserror", f"-out:{exe}", *sources], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    want = subprocess.run([str(build / "unity_layout")], capture_output=True, text=True, check=True).stdout
    env = {**os.environ, "LD_LIBRARY_PATH": f"{build}:{build / 'ssvk' / 'libstreamstyle'}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    got = subprocess.run(["mono", str(exe), "unity-layout"], capture_output=True, text=True, timeout=120, env=env)
    assert got.returncode == 0, got.stdout + got.stderr
    assert got.stdout.splitlines() == want.splitlines()
    assert len(want.splitlines()) > 30
    got = subprocess.run(["mono", str(exe), "unity-plugin"], capture_output=True, text=True, timeout=120, env=env)
    assert got.returncode == 0 and got.stdout.rstrip().endswith("RESULT ok"), got.stdout + got.stderr


def test_unreal_calls_only_the_bridge_functions_the_unity_plugin_calls():
    """The Unreal module cannot be compiled here; what keeps it honest is that below the engine API it
    calls the same per-frame driver as the Unity plugin, whose calls the harness above exercises: every
    ssvk_* function the Unreal sources name is one the Unity plugin calls."""
    unreal = UNITY_DIR.parent / "unreal" / "StreamStyle" / "Source"
    called = lambda text: set(re.findall(r"\b(ssvk_\w+)\s*\(", text))  # noqa: E731
    unity_calls = called((UNITY_NATIVE / "src" / "plugin.c").read_text())
    unreal_calls = set().union(*(called(p.read_text()) for p in unreal.rglob("*.cpp")))
    assert unreal_calls, "the Unreal module calls no bridge function"
    assert {"ssvk_frames_create", "ssvk_frames_run", "ssvk_frames_destroy"} <= unity_calls
    assert unreal_calls <= unity_calls | {"ssvk_last_error"}, unreal_calls - unity_calls
