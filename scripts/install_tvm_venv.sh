#!/usr/bin/env bash
# The optional TVM entrant of `looptune leaderboard`: a separate virtualenv with TVM, so TVM and
# its pins never touch looptune's environment. Usage: scripts/install_tvm_venv.sh [DIR]
# then: export LOOPTUNE_TVM_PYTHON=DIR/bin/python (or pass --tvm-python DIR/bin/python).
# apache-tvm-ffi is pinned: newer ffi builds crash inside MetaSchedule with TVM 0.27.
set -euo pipefail
dir=${1:-tvm-venv}
python3 -m venv "$dir"
"$dir/bin/pip" install numpy apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 \
    cloudpickle tornado xgboost psutil
"$dir/bin/python" -c "import tvm; print('TVM', tvm.__version__, 'ready:', '$dir/bin/python')"
