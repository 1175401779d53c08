#!/usr/bin/env bash
# Build the engine with ThreadSanitizer (-DLOOPTUNE_SANITIZE=thread) into build/tsan and run the
# threaded tests against it, as scripts/asan_test.sh does for ASan: the tests import a copy of
# the package (symlinks) whose _core is the sanitized one, and libtsan is preloaded into the
# uninstrumented interpreter (CPython, numpy and PyTorch synchronize through pthreads, which TSan
# intercepts). Any report fails the run: the thread pool, and the relayout, zeroing and copy
# passes its workers run (memcpy/memset are intercepted, so two threads writing one buffer is
# caught: a sanity check of this setup, two Python threads calling one accumulating kernel with
# the same `out`, is reported). TSAN_OPTIONS must not set ignore_noninstrumented_modules: it
# hides exactly such races on numpy-allocated buffers. The JIT'd kernels themselves are machine
# code TSan cannot see: their disjoint writes are checked by the bit-identical tests instead.
#
#   PY=/path/to/venv/python scripts/tsan_test.sh [extra pytest args]
#
# PY must not have looptune installed in editable mode (an editable install maps looptune to the
# checkout's plain _core whatever PYTHONPATH says; scripts/asan_test.sh works around that with
# `python -S`, which crashes under TSan's preload here): use a venv without looptune.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
BUILD=${BUILD:-build/tsan}
start=$(date +%s)
. scripts/sanitized_build.sh
sanitized_build thread  # the build and the package copy (not its -S wrapper: see above)
LIBTSAN=$(${CXX:-c++} -print-file-name=libtsan.so)
echo "tsan_test: built in $(( $(date +%s) - start )) s; preloading $LIBTSAN"
REPORT="$BUILD/reports"
rm -rf "$REPORT" && mkdir -p "$REPORT"
tests=(tests/test_threads.py tests/test_kernel_api.py tests/test_rowops.py tests/test_strided.py
       tests/test_int8_requant.py)
status=0
# OpenBLAS (numpy's references in these tests) on one thread: its workers synchronize by
# spinning on flags TSan cannot see, so its own threads' buffers would be reported as races
LD_PRELOAD="$LIBTSAN" OPENBLAS_NUM_THREADS=1 \
TSAN_OPTIONS="die_after_fork=0:exitcode=66:log_path=$REPORT/tsan" \
PYTHONPATH="$BUILD/pkg" "$PY" -m pytest -q -p no:cacheprovider "${tests[@]}" "$@" || status=$?
# Self-check: a real race (two Python threads zeroing one `out` through an accumulating kernel)
# must be reported, or the setup above would pass anything.
LD_PRELOAD="$LIBTSAN" TSAN_OPTIONS="exitcode=0:log_path=$REPORT/selfcheck" PYTHONPATH="$BUILD/pkg" \
"$PY" - <<'PYEOF'
import threading
import numpy as np
import looptune
k = looptune.matmul(64, 64, 64).default_schedule().swap_down().compile()  # out zeroed first
a = b = np.ones((64, 64), np.float32)
out = np.empty((64, 64), np.float32)
start = threading.Barrier(2)
def calls():
    start.wait()  # both threads call at once (the GIL is released around each call)
    for _ in range(1000):
        k(a, b, out)
ts = [threading.Thread(target=calls) for _ in range(2)]
for t in ts: t.start()
for t in ts: t.join()
PYEOF
if ! grep -qs "data race" "$REPORT"/selfcheck*; then
  echo "tsan_test: the self-check race was not reported: ThreadSanitizer is not active"
  status=1
fi
rm -f "$REPORT"/selfcheck*
if compgen -G "$REPORT/tsan*" >/dev/null; then
  echo "tsan_test: ThreadSanitizer reports:" && cat "$REPORT"/tsan*
  status=1
fi
echo "tsan_test: total $(( $(date +%s) - start )) s, $([ $status = 0 ] && echo clean || echo FAILED)"
exit $status
