#!/usr/bin/env bash
# The test suite once more, in a second virtualenv with the `ray` extra (ray[rllib], which pins
# gymnasium==1.2.2): the looptune.distributed tests run there (they skip in .venv, which has the
# newest gymnasium and no ray), and everything else is checked against gymnasium 1.2.2.
#
#   bash scripts/ray_tests.sh            # after `make test` (.venv must exist); .ci/run calls it
#
# The second venv is a copy of .venv (torch, SB3, the editable looptune build) plus the ray
# requirement of pyproject.toml's `ray` extra; it is rebuilt only when .venv was reinstalled.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
RAY_VENV=${RAY_VENV:-.venv-ray}
STAMP="$RAY_VENV/.looptune-ray-installed"
[ -x "$VENV/bin/python" ] || { echo "ray_tests.sh: run 'make test' first ($VENV missing)" >&2; exit 2; }
start=$(date +%s)
if [ ! -f "$STAMP" ] || [ "$VENV/.looptune-installed" -nt "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  rm -rf "$RAY_VENV"
  cp -a "$VENV" "$RAY_VENV"
  RAY_REQ=$("$RAY_VENV/bin/python" -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb")); print(*[r for r in d["project"]["optional-dependencies"]["ray"] if not r.startswith("looptune")])')
  "$RAY_VENV/bin/python" -m pip install -q $RAY_REQ
  touch "$STAMP"
fi
echo "ray venv ready in $(( $(date +%s) - start )) s: $("$RAY_VENV/bin/python" -c 'import ray, gymnasium; print("ray", ray.__version__, "gymnasium", gymnasium.__version__)')"
export RAY_USAGE_STATS_ENABLED=0
"$RAY_VENV/bin/python" -m pytest -q -p no:cacheprovider
echo "ray tests took $(( $(date +%s) - start )) s in all"
