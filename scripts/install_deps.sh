#!/usr/bin/env bash
# Installs looptune for development into a project virtualenv (.venv in the checkout), so it works
# on an externally-managed python (Debian/Ubuntu) too; quick when everything is present.
#   1. apt: libxbyak-dev (the JIT assembler, headers only) and python3-venv when missing;
#   2. python3 -m venv .venv (once), and a current pip;
#   3. the pinned CPU build of torch first (an unconstrained torch pulls a multi-GB CUDA build);
#   4. the build tools; a venv made before the switch to xgboost-cpu loses the CUDA xgboost;
#   5. `pip install -e .[rl,bench,cost,test]` (builds the C++ engine).
# Each step says what it does as it starts: a first run is quiet for minutes otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
VENV=${VENV:-.venv}
TORCH=${TORCH:-torch==2.13.0}
EXTRAS=rl,bench,cost,test
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
say() { echo "[looptune setup] $*"; }
APT_UPDATED=""
apt_install() {
  say "    installing $* with apt"
  [ -n "$APT_UPDATED" ] || { $SUDO apt-get update -qq; APT_UPDATED=1; }
  $SUDO apt-get install -y -qq "$@" >/dev/null
}

say "installing looptune into $VENV (a first run: ~1.5 min, 1.4 GB; later runs skip this)"
say "1/5 system packages: the xbyak headers (libxbyak-dev) and python3-venv"
[ -f /usr/include/xbyak/xbyak.h ] || apt_install libxbyak-dev
if [ ! -x "$VENV/bin/python" ]; then
  say "2/5 creating the virtualenv $VENV and updating its pip"
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then  # Debian's python lacks ensurepip without it
    rm -rf "$VENV"
    apt_install python3-venv
    "$PY" -m venv "$VENV"
  fi
else
  say "2/5 reusing the virtualenv $VENV; updating its pip"
fi
VPY="$VENV/bin/python"
pip_q() { "$VPY" -m pip "$@" -q; }
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true

say "3/5 installing $TORCH (the CPU build: a 190 MB wheel, 750 MB installed)"
pip_q install "$TORCH"

say "4/5 installing the build tools (scikit-build-core, pybind11, ninja, cmake)"
pip_q install "scikit-build-core>=0.10" "pybind11>=2.12" ninja cmake
# The cost extra used to be `xgboost`, whose Linux wheel carries CUDA and pulls nvidia-nccl-cu12
# (~700 MB together). `xgboost-cpu` installs the same `xgboost` module, so the old distribution
# has to go first (both own the same files); nccl goes too unless something else needs it.
if "$VPY" -m pip show xgboost >/dev/null 2>&1; then
  say "    replacing the CUDA build of xgboost with xgboost-cpu"
  gone=(xgboost)
  "$VPY" -m pip show xgboost-cpu >/dev/null 2>&1 && gone+=(xgboost-cpu)
  nccl_users=$("$VPY" -m pip show nvidia-nccl-cu12 2>/dev/null | sed -n 's/^Required-by: //p' || true)
  [ "$nccl_users" = xgboost ] && gone+=(nvidia-nccl-cu12)
  pip_q uninstall -y "${gone[@]}"
fi

say "5/5 installing looptune[$EXTRAS] and building its C++ engine (the longest step)"
pip_q install --no-build-isolation -e ".[$EXTRAS]"
say "done in ${SECONDS} s; $VENV takes $(du -sh "$VENV" | cut -f1) on disk"
