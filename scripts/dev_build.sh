#!/usr/bin/env bash
# Builds the C++ engine in place (python/looptune/_core*.so) for development without installing:
# run code and tests with PYTHONPATH=python. Several checkouts can share one virtualenv this way.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
BUILD=${BUILD:-build/dev}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-Release} \
  -DPython_EXECUTABLE="$(command -v "$PY")" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" \
  ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD"
cp "$BUILD"/_core*.so python/looptune/
