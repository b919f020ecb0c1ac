#!/usr/bin/env bash
# Split PanGu-alpha with both parties in one process, next to centralised training; writes
# output/loss.png. No arguments needed (the data is built on first use). Any --flag is passed on
# to run_pangu_train_local.py, e.g.:  bash run_pangu_train_local.sh --mode small --train_steps 1000
# Log: also in output/splitnn_pangu_local.txt (--log_file).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
exec "$PYTHON" run_pangu_train_local.py "$@"
