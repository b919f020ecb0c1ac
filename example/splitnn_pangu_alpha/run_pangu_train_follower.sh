#!/usr/bin/env bash
# Party B (follower: computation centre, transformer blocks) of the two-process split training.
# It holds no data (data flags on a shared command line are ignored).
#
#   bash run_pangu_train_follower.sh LOCAL_ADDR REMOTE_ADDR \
#        [ENABLE_SSL SERVER_PWD CLIENT_PWD SERVER_CERT CLIENT_CERT CA_CERT] [--flags ...]
#
# e.g.  MSF_CERT_PASSWORD=... bash run_pangu_train_follower.sh 127.0.0.1:10086 127.0.0.1:10087 \
#           --enable_ssl true --server_cert_path certs/follower_server.p12 \
#           --client_cert_path certs/follower_client.p12 --ca_cert_path certs/ca.pem
# Settings: config/main_job.yaml (--run_config), the same file as the leader's; the handshake
# refuses to start if the model settings differ. Output and log: output/follower/. More: --help.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
usage() { sed -n '2,12p' "$HERE/run_pangu_train_follower.sh"; exit 2; }
[ $# -ge 2 ] || usage
ARGS=(--http_server_address "$1" --remote_server_address "$2")
shift 2
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then
  [ $# -ge 6 ] || { echo "ENABLE_SSL needs SERVER_PWD CLIENT_PWD SERVER_CERT CLIENT_CERT CA_CERT" >&2; usage; }
  ssl_positional "$1" "$2" "$3" "$4" "$5" "$6"
  shift 6
fi
exec "$PYTHON" run_pangu_train_follower.py "${ARGS[@]}" "$@"
