#!/usr/bin/env bash
# The whole Wide&Deep split example on one machine, in a few minutes on 2 CPU cores:
#   1. generate_data.py writes raw csv tables for both parties (string ids, partial overlap);
#   2. the two parties start (run_vfl_process_follower.sh in the background, run_vfl_process_leader.sh)
#      and join their train and eval tables by ECDH-PSI over mutual TLS (certificates made here);
#   3. they train the split Wide&Deep model over the same connection; the leader logs loss and AUC.
#
#   bash run_demo.sh [--train_samples N] [--eval_samples N] [--epochs N] [--label_dp] [--no_ssl] [--workdir DIR]
#
# Data, certificates, checkpoints and the follower's log go to --workdir (default: ./data).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
TRAIN=16000 EVAL=4000 EXTRA=() SSL=1 WORK=data
while [ $# -gt 0 ]; do
  case "$1" in
    --train_samples) TRAIN="$2"; shift 2 ;;
    --eval_samples) EVAL="$2"; shift 2 ;;
    --epochs) EXTRA+=(--epochs "$2"); shift 2 ;;
    --label_dp) EXTRA+=(--label_dp True); shift ;;
    --no_ssl) SSL=0; shift ;;
    --workdir) WORK="$2"; shift 2 ;;
    *) sed -n '2,11p' "$HERE/run_demo.sh"; exit 2 ;;
  esac
done
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
EXTRA+=(--ckpt_path "$WORK/checkpoints")
rm -rf "$WORK/raw" "$WORK/joined" "$WORK/checkpoints"
"$PYTHON" generate_data.py --output_dir "$WORK/raw" --train_samples "$TRAIN" --eval_samples "$EVAL"
LEADER_TLS=() FOLLOWER_TLS=()
if [ "$SSL" = 1 ]; then
  PW="demo-$(date +%s%N)"
  rm -rf "$WORK/certs"
  "$PYTHON" -m mindspore_federated.tools.gen_certs "$WORK/certs" --names leader,follower --ips 127.0.0.1 \
      --password "$PW" >/dev/null
  for role in leader follower; do
    declare -n TLS="${role^^}_TLS"
    TLS=(--enable_ssl True --server_password "$PW" --client_password "$PW"
         --server_cert_path "$WORK/certs/${role}_server.p12" --client_cert_path "$WORK/certs/${role}_client.p12"
         --ca_cert_path "$WORK/certs/ca.pem")
  done
fi
PORTS=$("$PYTHON" -c "import socket
s=[socket.socket() for _ in range(2)]
[x.bind(('127.0.0.1', 0)) for x in s]
print(*[x.getsockname()[1] for x in s])")
read -r LEADER_PORT FOLLOWER_PORT <<< "$PORTS"
bash run_vfl_process_follower.sh "127.0.0.1:$FOLLOWER_PORT" "127.0.0.1:$LEADER_PORT" "$WORK/raw/follower/train" \
    "$WORK/raw/follower/eval" "$WORK/joined/follower/train" "$WORK/joined/follower/eval" \
    "${FOLLOWER_TLS[@]}" "${EXTRA[@]}" > "$WORK/follower.log" 2>&1 &
FOLLOWER=$!
trap 'kill $FOLLOWER 2>/dev/null || true' EXIT
bash run_vfl_process_leader.sh "127.0.0.1:$LEADER_PORT" "127.0.0.1:$FOLLOWER_PORT" "$WORK/raw/leader/train" \
    "$WORK/raw/leader/eval" "$WORK/joined/leader/train" "$WORK/joined/leader/eval" "${LEADER_TLS[@]}" "${EXTRA[@]}"
wait $FOLLOWER || { echo "the follower failed, see $WORK/follower.log" >&2; tail -20 "$WORK/follower.log" >&2; exit 1; }
trap - EXIT
echo "done: joined data in $WORK/joined/, checkpoints in $WORK/checkpoints/, follower log $WORK/follower.log"
