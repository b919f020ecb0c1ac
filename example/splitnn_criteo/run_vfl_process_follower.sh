#!/usr/bin/env bash
# Follower: data join (ECDH-PSI) of its raw csv tables with the leader's, then split training.
#
#   bash run_vfl_process_follower.sh LOCAL_ADDR REMOTE_ADDR RAW_TRAIN_DIR RAW_EVAL_DIR JOINED_TRAIN_DIR \
#        JOINED_EVAL_DIR [RESUME] [--flags ...]
#
# e.g.  bash run_vfl_process_follower.sh 127.0.0.1:1087 127.0.0.1:1086 data/raw/follower/train \
#           data/raw/follower/eval data/joined/follower/train data/joined/follower/eval
# Mutual TLS: add --enable_ssl True --server_password ... --client_password ... --server_cert_path ...
# --client_cert_path ... --ca_cert_path ... (certificates: python -m mindspore_federated.tools.gen_certs).
# Other --flags go to run_vfl_process_follower.py (see yaml_files/network_config.yaml).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
usage() { sed -n '2,13p' "$HERE/run_vfl_process_follower.sh"; exit 2; }
[ $# -ge 6 ] || usage
ARGS=(--http_server_address "$1" --remote_server_address "$2" --raw_dataset_dir "$3" --raw_eval_dataset_dir "$4"
      --dataset_dir "$5" --eval_dataset_dir "$6" --data_schema_path yaml_files/follower_schema.yaml)
shift 6
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then ARGS+=(--resume "$1"); shift; fi
exec "$PYTHON" run_vfl_process_follower.py "${ARGS[@]}" "$@"
