#!/usr/bin/env bash
# Party A (leader: data owner, embedding + head) of the two-process split training.
#
#   bash run_pangu_train_leader.sh LOCAL_ADDR REMOTE_ADDR TRAIN_DATA EVAL_DATA \
#        [ENABLE_SSL SERVER_PWD CLIENT_PWD SERVER_CERT CLIENT_CERT CA_CERT] [--flags ...]
#
# e.g.  bash run_pangu_train_leader.sh 127.0.0.1:10087 127.0.0.1:10086 data/mindrecord/train \
#           data/mindrecord/eval true "$PW" "$PW" certs/leader_server.p12 certs/leader_client.p12 \
#           certs/ca.pem --vocab_model data/vocab/pangu_sp.model --train_steps 300
# Compressed wire: add --compress min_max6 (or fp16, min_max8) on BOTH parties.
# Extra --flags after the positional arguments go to run_pangu_train_leader.py (see --help).
# Log: also in leader_process.log (--log_file).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
usage() { sed -n '2,13p' "$HERE/run_pangu_train_leader.sh"; exit 2; }
[ $# -ge 4 ] || usage
ARGS=(--http_server_address "$1" --remote_server_address "$2" --data_url "$3" --eval_data_url "$4")
shift 4
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then
  [ $# -ge 6 ] || { echo "ENABLE_SSL needs SERVER_PWD CLIENT_PWD SERVER_CERT CLIENT_CERT CA_CERT" >&2; usage; }
  ARGS+=(--enable_ssl "$1" --server_password "$2" --client_password "$3" --server_cert_path "$4"
         --client_cert_path "$5" --ca_cert_path "$6")
  shift 6
fi
exec "$PYTHON" run_pangu_train_leader.py "${ARGS[@]}" "$@"
