#!/usr/bin/env bash
# Both parties in one process, from the joined data of both (data/joined/{leader,follower}/ after
# run_demo.sh or the run_vfl_process_*.sh pair). Extra --flags go to run_vfl_train_local.py.
#
#   bash run_vfl_train_local.sh [--epochs 4] [--leader_data_path DIR] [--follower_data_path DIR]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
for role in leader follower; do
  [ -d "data/joined/$role/train" ] || [[ " $* " == *" --${role}_data_path "* ]] || {
    echo "no joined data in data/joined/$role: run 'bash run_demo.sh' (or the run_vfl_process_*.sh pair) first" >&2
    exit 2; }
done
exec "$PYTHON" run_vfl_train_local.py "$@"
