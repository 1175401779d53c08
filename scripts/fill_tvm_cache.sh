#!/usr/bin/env bash
# Tune TVM MetaSchedule on the leaderboard suite, one benchmark per bench-lock acquisition, so a
# later `looptune leaderboard --tvm-records DIR` finds every result cached and does not tune again.
# Order: the quick entry of each part first, then the rest, smallest FLOPs first.
# Usage: scripts/fill_tvm_cache.sh RECORDS_DIR [TRIALS]   (needs LOOPTUNE_TVM_PYTHON)
# Each benchmark's run is kept in RECORDS_DIR/runs/NAME.json; a benchmark already there is skipped.
set -uo pipefail
records=${1:?usage: fill_tvm_cache.sh RECORDS_DIR [TRIALS]}
trials=${2:-64}
py=${PYTHON:-python}
: "${LOOPTUNE_TVM_PYTHON:?set LOOPTUNE_TVM_PYTHON to the python of the TVM virtualenv}"
mkdir -p "$records/runs"
list_order='
from looptune.leaderboard import suite
es = suite.entries()
quick = [e for e in es if e.quick]
rest = sorted((e for e in es if not e.quick), key=lambda e: e.flops)
print(" ".join(e.part + ":" + e.name for e in quick + rest))'
order=$("$py" -c "$list_order") || exit 1
for item in $order; do
    part=${item%%:*} name=${item#*:}
    out="$records/runs/$name.json"
    [ -s "$out" ] && continue
    echo "$(date -u +%T) $name"
    flock /tmp/looptune-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        "$py" -m looptune leaderboard --part "$part" --benchmarks "$name" --searches none \
        --no-torch --tvm-trials "$trials" --tvm-records "$records" --no-progress \
        --out "$out" > "$records/runs/$name.log" 2>&1 || echo "  failed: see $name.log"
done
