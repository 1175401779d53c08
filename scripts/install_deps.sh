#!/usr/bin/env bash
# Installs what looptune needs on a fresh Debian/Ubuntu machine; quick when all is present.
set -euo pipefail
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if [ ! -f /usr/include/xbyak/xbyak.h ]; then
  echo "installing libxbyak-dev (xbyak JIT assembler) with apt" >&2
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libxbyak-dev >/dev/null
fi
PY=${PY:-python3}
# torch is pinned: an unpinned torch pulls a multi-GB CUDA build.
$PY -m pip install -q "torch==2.13.0" "stable-baselines3>=2.3" "sb3-contrib>=2.3" tensorboard \
  "gymnasium>=1.0" "networkx>=3.0" tqdm numpy threadpoolctl matplotlib \
  "pytest>=7" "hypothesis>=6" "scikit-build-core>=0.10" "pybind11>=2.12" ninja cmake
