# Sourced by scripts/asan_test.sh and scripts/tsan_test.sh: build the engine with a sanitizer
# (LOOPTUNE_SANITIZE=$1: ON for ASan+UBSan, thread for TSan) into $BUILD, then lay out a copy of
# the package (symlinks to python/looptune) whose _core is the sanitized one, in $PKG.
# Needs PY (the interpreter whose pybind11 builds it) and BUILD; sets PKG.
sanitized_build() {
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOOPTUNE_SANITIZE="$1" \
    -DPython_EXECUTABLE="$(command -v "$PY")" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >/dev/null
  cmake --build "$BUILD"
  PKG="$BUILD/pkg/looptune"
  rm -rf "$BUILD/pkg" && mkdir -p "$PKG"
  for f in python/looptune/*; do
    case "$(basename "$f")" in _core*.so) ;; *) ln -s "$(pwd)/$f" "$PKG/" ;; esac
  done
  cp "$BUILD"/_core*.so "$PKG/"
}
