#!/usr/bin/env bash
# Build the engine with AddressSanitizer + UndefinedBehaviorSanitizer (-DLOOPTUNE_SANITIZE=ON)
# into build/asan, and run the correctness tests against it. The tree's own _core*.so is left
# alone: the tests import a copy of the package (symlinks) whose _core is the sanitized one.
# The Python interpreter is not instrumented, so libasan is preloaded; leak checking is off
# (CPython keeps allocations alive at exit). Any ASan/UBSan report aborts the test run.
#
#   PY=/path/to/venv/python scripts/asan_test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
BUILD=${BUILD:-build/asan}
start=$(date +%s)
. scripts/sanitized_build.sh
sanitized_build ON
LIBASAN=$(${CXX:-c++} -print-file-name=libasan.so)
LIBUBSAN=$(${CXX:-c++} -print-file-name=libubsan.so)
for lib in "$LIBASAN" "$LIBUBSAN"; do  # a bare name means the compiler has no such runtime
  [ -f "$lib" ] || { echo "asan_test: the compiler has no $lib (install gcc's libasan/libubsan)" >&2; exit 2; }
done
echo "asan_test: built in $(( $(date +%s) - start )) s; preloading $LIBASAN"
tests=(tests/test_kernel_api.py tests/test_loop_tree.py tests/test_mutations.py tests/test_codegen.py
       tests/test_relayout.py tests/test_computation.py
       tests/test_bad_inputs.py tests/test_fuzz.py tests/test_threads.py tests/test_int8_engine.py
       tests/test_rowops.py tests/test_strided.py tests/test_int8_requant.py)
for t in tests/test_kernel*.py tests/test_correctness*.py tests/test_computation*.py; do
  [ -e "$t" ] && [[ " ${tests[*]} " != *" $t "* ]] && tests+=("$t")
done
LD_PRELOAD="$LIBASAN $LIBUBSAN" ASAN_OPTIONS=detect_leaks=0 check_sanitized
LD_PRELOAD="$LIBASAN $LIBUBSAN" \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
"$SPY" -m pytest -q -p no:cacheprovider "${tests[@]}" "$@"
echo "asan_test: total $(( $(date +%s) - start )) s"
