"""Packaging as a user installs it (STYLE 19): the wheel built from this checkout, installed
non-editable into a fresh virtual environment with only its declared dependencies (and the CPU
build of torch from this machine's disk), holds every module of the source tree, imports every
one of them, and runs `streamstyle demo --frames 4 --no-video`.

A module may fail to import only for want of an optional extra (the Triton kernels without
`triton`, say); anything else, a subpackage missing from the wheel above all, fails the test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import streamstyle

ROOT = Path(streamstyle.__file__).resolve().parent
# Top-level imports that an extra of pyproject.toml provides.
EXTRA_IMPORTS = {"triton": "triton", "diffusers": "peers", "cuda": "cuda", "imageio_ffmpeg": "video", "PIL": "video",
                 "panda3d": "panda3d", "gltf": "panda3d", "prometheus_client": "studio", "pythonosc": "studio"}
# The modules that need an extra a plain install lacks: the Triton kernels, the Panda3D integration,
# and the studio's metrics (the single service's and the multi-worker front's) and OSC receiver
# (`serve --metrics/--osc` say which extra to install).
NEED_EXTRA = {"triton": lambda m: m.endswith(".triton_kernel"),
              "panda3d": lambda m: ".panda3d." in m or m.endswith((".panda3d_capture", ".real_eval")),
              "prometheus_client": lambda m: m in ("streamstyle.service.metrics", "streamstyle.service.front_metrics"),
              "pythonosc": lambda m: m == "streamstyle.service.osc"}
# What the wheel must not ship: the tests, and setup.py (it would be `streamstyle.setup`).
NOT_SHIPPED = ("tests/", "setup.py")

WALK = r"""
import importlib, json, pkgutil, sys
import streamstyle
optional = set(sys.argv[1].split(","))
imported, need_extra, failed = [], {}, {}
for info in pkgutil.walk_packages(streamstyle.__path__, "streamstyle.",
                                  onerror=lambda name: failed.setdefault(name, "cannot walk")):
    if info.name.endswith(".__main__"):
        continue  # importing a __main__ runs the command
    try:
        importlib.import_module(info.name)
        imported.append(info.name)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top in optional:
            need_extra[info.name] = top
        else:
            failed[info.name] = repr(exc)
    except Exception as exc:
        failed[info.name] = repr(exc)
print(json.dumps({"file": streamstyle.__file__, "imported": imported, "need_extra": need_extra,
                  "failed": failed, "transformers": "transformers" in sys.modules}))
"""


def source_modules() -> set[str]:
    """Paths (relative to the root, '/'-separated) of every module the wheel must ship: the .py
    files of every folder that is a package, found by its __init__.py chain from the root."""
    found = set()
    for folder, dirs, files in os.walk(ROOT):
        rel = Path(folder).relative_to(ROOT)
        if rel != Path(".") and not (Path(folder) / "__init__.py").exists():
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
        for name in files:
            path = (rel / name).as_posix()
            if name.endswith(".py") and not path.startswith(NOT_SHIPPED):
                found.add(path)
    return found


def clean_env(**extra: str) -> dict:
    """This environment without anything that would put the source tree on the path."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("STREAMSTYLE_")}
    return {**env, **extra}


def run(cmd: list, cwd: Path, timeout: float, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=clean_env(**env), capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def copy_tree(dest: Path) -> Path:
    """The checkout's files (tracked and untracked, less what git ignores), so that the build
    writes its build/ and egg-info folders outside the working tree."""
    listing = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "-co", "--exclude-standard"],
                             capture_output=True, timeout=60)
    if listing.returncode == 0:
        for name in filter(None, listing.stdout.decode().split("\0")):
            src = ROOT / name
            if src.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name)
    else:  # not a git checkout
        shutil.copytree(ROOT, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache"))
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = copy_tree(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheel")
    # The setuptools already here builds it (no download), where there is one.
    offline = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", *offline, "-q", "-w", out, src], cwd=src, timeout=600)
    (built,) = out.glob("streamstyle-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment (no system site-packages) with the wheel and its declared
    runtime dependencies; torch is the CPU build 2.13.0, installed first as .ci/run does."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", "torch==2.13.0"], cwd=env_dir, timeout=900)
    run([python, "-m", "pip", "install", "-q", wheel], cwd=env_dir, timeout=900)
    return python


def test_the_wheel_ships_every_module_of_the_tree_and_the_default_weights(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.removeprefix("streamstyle/") for n in names if n.startswith("streamstyle/") and n.endswith(".py")}
    want = source_modules()
    assert {"kernels/adaln/__init__.py", "kernels/writeback/__init__.py", "tools/cli.py"} <= want
    assert want - shipped == set(), "modules of the source tree missing from the wheel"
    assert shipped - want == set(), "modules in the wheel that are not the package's"
    assert "streamstyle/model/weights/default/model.safetensors" in names
    assert "streamstyle/model/weights/default/config.json" in names
    for name in ("index.html", "app.js", "style.css"):  # the preview page (serve --preview)
        assert f"streamstyle/service/static/{name}" in names
    assert not [n for n in names if n.startswith(("streamstyle/docs/", "streamstyle/benchmarks/"))]
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [line for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    runtime = {re.match(r"[A-Za-z0-9_.-]+", line.split(":", 1)[1].strip()).group(0).lower() for line in requires}
    # The runtime install stays lean: what the video, the peers and the text model's training
    # stack need comes only with an extra.
    assert runtime.isdisjoint({"transformers", "sentence-transformers", "imageio-ffmpeg", "pillow", "diffusers",
                               "triton"}), runtime


@pytest.mark.slow
def test_the_installed_wheel_imports_every_module_and_runs_the_demo(installed, tmp_path):
    python = installed
    walked = json.loads(run([python, "-c", WALK, ",".join(EXTRA_IMPORTS)], cwd=tmp_path, timeout=600).stdout)
    site = Path(walked["file"]).resolve()
    assert installed.parent.parent in site.parents, f"imported {site}, not the installed wheel"
    assert walked["failed"] == {}
    # every module walked: all the source's but the root __init__ (the walk's start) and __main__
    assert len(walked["imported"]) + len(walked["need_extra"]) == len(source_modules()) - 2
    # Only the Triton kernels, the Panda3D integration and the studio's metrics and OSC need an extra that the plain install lacks.
    assert set(walked["need_extra"].values()) <= set(NEED_EXTRA), walked["need_extra"]
    assert all(NEED_EXTRA[top](m) for m, top in walked["need_extra"].items()), walked["need_extra"]
    assert "streamstyle.model.text" in walked["imported"] and "streamstyle.tools.demo" in walked["imported"]

    streamstyle_cmd = installed.parent / "streamstyle"
    demo = run([streamstyle_cmd, "demo", "--frames", "4", "--no-video", "--size", "64x64"], cwd=tmp_path, timeout=600)
    assert "frames done / late / dropped  4 / 0 / 0" in demo.stdout, demo.stdout
    assert "trained weights" in demo.stdout  # the shipped default model came with the wheel

    # Without the video extra, the demo's video is refused up front, saying how to get it.
    no_video = subprocess.run([str(streamstyle_cmd), "demo", "--frames", "1", "--size", "64x64"], cwd=tmp_path,
                              env=clean_env(), capture_output=True, text=True, timeout=300)
    assert no_video.returncode == 2
    assert "pip install 'streamstyle[video]'" in no_video.stderr and "--no-video" in no_video.stderr
