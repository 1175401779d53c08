#!/usr/bin/env bash
# The full leaderboard run on a shared machine: one benchmark per bench-lock acquisition (each
# a `looptune leaderboard --benchmarks NAME` run, every entrant), then one merged result file
# with its tables and plots. Resumable: a benchmark whose result file exists is not run again.
# Usage: scripts/leaderboard_full.sh OUT_DIR [looptune leaderboard options...]
#   e.g. scripts/leaderboard_full.sh benchmarks/results/leaderboard --budget 5 \
#            --tvm-records /work/tvm-cache --tvm-trials 64
# ONLY=name1,name2 runs only those benchmarks; QUICK=1 only the quick entry of each part.
# Writes OUT_DIR/runs/NAME.json (+ .log), then OUT_DIR/leaderboard.{json,md} and the plots.
set -uo pipefail
out=${1:?usage: leaderboard_full.sh OUT_DIR [leaderboard options...]}
shift
py=${PYTHON:-python}
mkdir -p "$out/runs"
list='
import os
from looptune.leaderboard import suite
only = [n for n in os.environ.get("ONLY", "").split(",") if n]
es = suite.select(quick=os.environ.get("QUICK") == "1")
print(" ".join(e.part + ":" + e.name for e in es if not only or e.name in only))'
order=$("$py" -c "$list") || exit 1
files=()
for item in $order; do
    part=${item%%:*} name=${item#*:}
    run="$out/runs/$name.json"
    files+=("$run")
    [ -s "$run" ] && continue
    echo "$(date -u +%T) $name"
    flock /tmp/looptune-bench.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        "$py" -m looptune leaderboard --part "$part" --benchmarks "$name" --no-progress \
        --out "$run" "$@" > "$out/runs/$name.log" 2>&1 || echo "  failed: see $name.log"
done
done_files=()
for f in "${files[@]}"; do [ -s "$f" ] && done_files+=("$f"); done
[ ${#done_files[@]} -gt 0 ] || { echo "no results"; exit 1; }
"$py" -m looptune leaderboard --merge "${done_files[@]}" --out "$out/leaderboard.json" \
    --table "$out/leaderboard.md" --plots "$out" > /dev/null
echo "merged ${#done_files[@]} benchmarks: $out/leaderboard.md"
