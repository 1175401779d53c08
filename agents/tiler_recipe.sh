#!/bin/sh
# The shipped tiling agent, end to end, for one ISA (default: the host's):
#   sh agents/tiler_recipe.sh [avx512|avx2] [host]
# 1. measure every tile macro of the training computations on scaled-down instances, serially
#    and (their parallel variants) at 2 threads, each 2-thread batch only while both cores are
#    free (resumable pieces under the bench lock), 2. fit the scorer (no timing),
# 3. check the cheap reward and the scorer against full-size timings, 4. record the check
#    in the shipped policy's provenance.
# With "host", the policy is saved as this microarchitecture's
# (policy_tiler_<isa>_<tag>, tag from looptune.cpu_signature()), which the agent prefers
# over the ISA's generic policy on a CPU with the same signature.
set -e
ISA=${1:-$(python -c "import looptune; print(looptune.host_isa())")}
NAME=$ISA
if [ "${2:-}" = host ]; then
  NAME=${ISA}_$(python -c "import looptune; from looptune.agent.tiler_policy import signature_tag; print(signature_tag(looptune.cpu_signature()))")
fi
LOCK="flock /tmp/looptune-bench.lock"
OUT=runs/tiler_$NAME
mkdir -p "$OUT"
until $LOCK python agents/tiler_data.py --isa "$ISA" --threads 1,2 --out "$OUT/data.jsonl" \
    --max-seconds 360; do
  [ $? -eq 3 ] || exit 1
done
POLICY=python/looptune/data/policy_tiler_$NAME.safetensors
python agents/train_tiler.py --isa "$ISA" --data "$OUT/data.jsonl" --save "$POLICY"
$LOCK python agents/tiler_check.py --isa "$ISA" --policy "$POLICY" --out "$OUT/check.json"
python agents/train_tiler.py --isa "$ISA" --data "$OUT/data.jsonl" --save "$POLICY" \
  --check "$OUT/check.json"
