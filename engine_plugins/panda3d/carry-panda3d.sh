#!/usr/bin/env bash
# Prepare Panda3D for a machine that reaches no package registry (the GPU machine): download the
# cp312 manylinux wheels of panda3d and panda3d-gltf, and strip Panda3D down to
# what a headless G-buffer pass needs. Output, in DEST (default .p3d/ in the repository root, which
# .gitignore keeps out of git; carry it in a device call's `carry`):
#   DEST/panda3d-<ver>-cp312-stripped.tar.xz   the panda3d package + direct/, to untar into a site dir
#   DEST/panda3d_gltf-*.whl                     the glTF loader (pure Python; its simplepbr dependency
#                                               serves only its viewer and is left out: 2.4 MB)
# Removed: ffmpeg (video), tinydisplay (software renderer), assimp (other model
# formats; ptloader stays: it brings in the egg loader), Bullet, ODE and the physics/particles module, OpenAL audio, vision (webcams), VRPN, AI,
# skel, the RenderPipeline light helper, direct's level editor, Tk/wx panels and packaging tools, the
# command-line tools (panda3d_tools/),
# deploy_libs/ and interrogate's input files (pandac/input). Kept: libCg.so (libpanda links it),
# libpandagl, libp3headlessgl (EGL), the egg loader and Panda3D's own models/ (less `environment`).
# Size: 14 MB. A device call carries 64 MiB with the tracked tree (51.5 MB on 2026-12-01), so the
# shared glTF assets do not fit beside it: the GPU check renders Panda3D's own `panda` model there.
# Usage: engine_plugins/panda3d/carry-panda3d.sh [DEST] [PYTHON_VERSION (3.12)]
set -euo pipefail
dest=${1:-.p3d}
py=${2:-3.12}
tag=cp${py/./}
ver=1.10.16
mkdir -p "$dest/download"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d "$dest/download" "panda3d==$ver" panda3d-gltf==1.3.0 \
  2> >(grep -v "is ignored: it is neither" >&2)
cp "$dest"/download/panda3d_gltf-*.whl "$dest/"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
unzip -q "$dest"/download/panda3d-$ver-$tag-*.whl -d "$stage"
(
  cd "$stage"
  rm -rf panda3d_tools deploy_libs pandac/input panda3d-$ver.dist-info/RECORD
  (cd direct && rm -rf leveleditor tkpanels tkwidgets directscripts dist p3d doc cluster wxwidgets)
  cd panda3d
  rm -f libp3ffmpeg.so libp3tinydisplay.so libp3assimp.so libp3openal_audio.so libp3fmod_audio.so \
        libpandabullet.so.* bullet.*.so libpandaode.so.* ode.*.so libpandaphysics.so.* physics.*.so \
        libp3vision.so.* vision.*.so libp3vrpn.so.* vrpn.*.so libpandaai.so.* ai.*.so libpandaskel.so.* skel.*.so \
        _rplight.*.so
  # Panda3D's `environment` model and the editor's icons and sounds: 1.6 MB of barely compressible
  # images, and a call carries 64 MiB with the tree; teapot, panda and the rest stay.
  rm -rf models/environment.egg.pz models/maps/envir-* models/icons models/audio
)
out="$dest/panda3d-$ver-$tag-stripped.tar.xz"
XZ_OPT=-9 tar -C "$stage" -cJf "$out" .
echo "$out: $(du -k "$out" | cut -f1) KiB (the wheel: $(du -k "$dest"/download/panda3d-$ver-$tag-*.whl | cut -f1) KiB)"
du -ck "$out" "$dest"/*.whl | tail -1 | awk '{print "to carry in all: " $1 " KiB"}'
