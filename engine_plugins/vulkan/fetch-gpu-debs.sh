#!/usr/bin/env bash
# fetch-gpu-debs.sh DIR: download (here, with apt-get, amd64) the Debian 12 packages gpu-check.sh needs on a
# GPU machine that lacks them, into DIR, to carry there: the Vulkan loader and headers, the GL dispatch
# libraries NVIDIA's Vulkan driver needs (libglvnd), libzmq and msgpack-c
# with their headers and the libraries libzmq loads, and pkgconf. gpu-check.sh unpacks those loaders into / (as
# the device README says loaders go) and everything else into its build folder, never into /.
set -euo pipefail
dir=${1:?usage: fetch-gpu-debs.sh DIR}
mkdir -p "$dir" /tmp/amd64-lists/partial
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64-lists'
apt-get $o update -qq
cd "$dir"
apt-get $o download libvulkan1 libvulkan-dev libglvnd0 libglx0 libgl1 libegl1 libopengl0 libgles2 libzmq5 libzmq3-dev libmsgpackc2 libmsgpack-dev libsodium23 \
    libpgm-5.3-0 libnorm1 libbsd0 libmd0 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 \
    libkeyutils1 pkgconf pkgconf-bin libpkgconf3
ls -1 "$PWD"
