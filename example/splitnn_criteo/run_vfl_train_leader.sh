#!/usr/bin/env bash
# Leader of the two-process split training, from data already joined (run_vfl_process_*.sh did it).
#
#   bash run_vfl_train_leader.sh LOCAL_ADDR REMOTE_ADDR DATA_PATH \
#        [ENABLE_SSL SERVER_PWD CLIENT_PWD SERVER_CERT CLIENT_CERT CA_CERT] [--flags ...]
#
# DATA_PATH holds the party's joined train/ and eval/ folders, e.g. data/joined/leader.
# e.g.  bash run_vfl_train_leader.sh 127.0.0.1:1086 127.0.0.1:1087 data/joined/leader
# Extra --flags go to run_vfl_train_leader.py (see yaml_files/network_config.yaml).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
usage() { sed -n '2,9p' "$HERE/run_vfl_train_leader.sh"; exit 2; }
[ $# -ge 3 ] || usage
ARGS=(--http_server_address "$1" --remote_server_address "$2" --data_path "$3")
shift 3
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then
  [ $# -ge 6 ] || { echo "ENABLE_SSL needs SERVER_PWD CLIENT_PWD SERVER_CERT CLIENT_CERT CA_CERT" >&2; usage; }
  ARGS+=(--enable_ssl "$1" --server_password "$2" --client_password "$3" --server_cert_path "$4"
         --client_cert_path "$5" --ca_cert_path "$6")
  shift 6
fi
exec "$PYTHON" run_vfl_train_leader.py "${ARGS[@]}" "$@"
