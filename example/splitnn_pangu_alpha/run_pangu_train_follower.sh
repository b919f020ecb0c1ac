#!/usr/bin/env bash
# Party B (follower: computation centre, transformer blocks) of the two-process split training.
# It holds no data.
#
#   bash run_pangu_train_follower.sh LOCAL_ADDR REMOTE_ADDR \
#        [ENABLE_SSL SERVER_PWD CLIENT_PWD SERVER_CERT CLIENT_CERT CA_CERT] [--flags ...]
#
# e.g.  bash run_pangu_train_follower.sh 127.0.0.1:10086 127.0.0.1:10087 true "$PW" "$PW" \
#           certs/follower_server.p12 certs/follower_client.p12 certs/ca.pem
# Compressed wire: add --compress min_max6 (or fp16, min_max8) on BOTH parties.
# Model flags (--config, --seq_length, --per_batch_size, ...) must match the leader's; the
# handshake refuses to start otherwise. Log: also in follower_process.log (--log_file).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
usage() { sed -n '2,13p' "$HERE/run_pangu_train_follower.sh"; exit 2; }
[ $# -ge 2 ] || usage
ARGS=(--http_server_address "$1" --remote_server_address "$2")
shift 2
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then
  [ $# -ge 6 ] || { echo "ENABLE_SSL needs SERVER_PWD CLIENT_PWD SERVER_CERT CLIENT_CERT CA_CERT" >&2; usage; }
  ARGS+=(--enable_ssl "$1" --server_password "$2" --client_password "$3" --server_cert_path "$4"
         --client_cert_path "$5" --ca_cert_path "$6")
  shift 6
fi
exec "$PYTHON" run_pangu_train_follower.py "${ARGS[@]}" "$@"
