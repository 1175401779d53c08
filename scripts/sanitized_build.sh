# Sourced by scripts/asan_test.sh and scripts/tsan_test.sh: build the engine with a sanitizer
# (LOOPTUNE_SANITIZE=$1: ON for ASan+UBSan, thread for TSan) into $BUILD, then lay out a copy of
# the package (symlinks to python/looptune) whose _core is the sanitized one, in $PKG.
# Needs PY (the interpreter whose pybind11 builds it) and BUILD; sets PKG, and SPY: a wrapper
# that runs PY on the sanitized copy. It runs PY with -S and puts site-packages on PYTHONPATH
# after the copy: an editable install (what `make` makes) maps `looptune` to the checkout and
# its plain _core whatever PYTHONPATH says, and would test the unsanitized engine. The wrapper
# checks that the _core it imports is the sanitized one.
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
  local site root
  root=$(cd "$BUILD" && pwd)
  site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  SPY="$root/python"
  printf '#!/bin/sh\nPYTHONPATH="%s:%s${PYTHONPATH:+:$PYTHONPATH}" exec "%s" -S "$@"\n' \
    "$root/pkg" "$site" "$(command -v "$PY")" > "$SPY"
  chmod +x "$SPY"
}

# Fails unless SPY imports the sanitized _core (call it with the sanitizer's LD_PRELOAD set).
check_sanitized() {
  "$SPY" -c 'import sys, looptune._core as c; f = c.__file__
if not f.startswith(sys.argv[1]): sys.exit(f"imported {f}, not the sanitized build")' \
    "$(cd "$BUILD" && pwd)/pkg"
}
