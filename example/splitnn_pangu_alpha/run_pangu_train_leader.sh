#!/usr/bin/env bash
# Party A (leader: data owner, embedding + head) of the two-process split training.
#
#   bash run_pangu_train_leader.sh LOCAL_ADDR REMOTE_ADDR TRAIN_DATA EVAL_DATA \
#        [ENABLE_SSL SERVER_PWD CLIENT_PWD SERVER_CERT CLIENT_CERT CA_CERT [EMBEDDING_DP]] [--flags ...]
#
# e.g.  MSF_CERT_PASSWORD=... bash run_pangu_train_leader.sh 127.0.0.1:10087 127.0.0.1:10086 \
#           data/mindrecord/train data/mindrecord/eval --enable_ssl true --server_cert_path \
#           certs/leader_server.p12 --client_cert_path certs/leader_client.p12 --ca_cert_path certs/ca.pem
# Settings: config/main_job.yaml (--run_config), the same file as the follower's and the local run's.
# Passwords: MSF_CERT_PASSWORD (or MSF_SERVER/CLIENT_PASSWORD, --*_password_file); positional ones work
# but are visible in ps. Output and log: output/leader/ (--output_dir). More flags: --help.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
usage() { sed -n '2,12p' "$HERE/run_pangu_train_leader.sh"; exit 2; }
[ $# -ge 4 ] || usage
ARGS=(--http_server_address "$1" --remote_server_address "$2" --data_url "$3" --eval_data_url "$4")
shift 4
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then
  [ $# -ge 6 ] || { echo "ENABLE_SSL needs SERVER_PWD CLIENT_PWD SERVER_CERT CLIENT_CERT CA_CERT" >&2; usage; }
  ssl_positional "$1" "$2" "$3" "$4" "$5" "$6"
  shift 6
  # the original's 11th argument: EMBEDDING_DP (True/False)
  if [ $# -gt 0 ] && [[ "$1" != --* ]]; then ARGS+=(--embedding_dp "$1"); shift; fi
fi
exec "$PYTHON" run_pangu_train_leader.py "${ARGS[@]}" "$@"
