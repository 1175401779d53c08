#!/usr/bin/env bash
# Installs looptune for development into a project virtualenv (.venv in the checkout), so it works
# on an externally-managed python (Debian/Ubuntu) too; quick when everything is present.
#   1. apt: libxbyak-dev (the JIT assembler, headers only) and python3-venv when missing;
#   2. python3 -m venv .venv (once);
#   3. the pinned CPU build of torch first (an unconstrained torch pulls a multi-GB CUDA build);
#   4. the build tools, then `pip install -e .[rl,bench,cost,test]` (builds the C++ engine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
VENV=${VENV:-.venv}
TORCH=${TORCH:-torch==2.13.0}
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
APT_UPDATED=""
apt_install() {
  echo "installing $* with apt" >&2
  [ -n "$APT_UPDATED" ] || { $SUDO apt-get update -qq; APT_UPDATED=1; }
  $SUDO apt-get install -y -qq "$@" >/dev/null
}
[ -f /usr/include/xbyak/xbyak.h ] || apt_install libxbyak-dev
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then  # Debian's python lacks ensurepip without it
    rm -rf "$VENV"
    apt_install python3-venv
    "$PY" -m venv "$VENV"
  fi
fi
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$VPY" -m pip install -q "$TORCH" "scikit-build-core>=0.10" "pybind11>=2.12" ninja cmake
"$VPY" -m pip install -q --no-build-isolation -e ".[rl,bench,cost,test]"
