#!/usr/bin/env bash
# Party A (leader) with EmbeddingDP on the embedding activations it sends to party B.
#
#   bash run_pangu_train_leader_embedding_dp.sh LOCAL_ADDR REMOTE_ADDR TRAIN_DATA EVAL_DATA \
#        [ENABLE_SSL SERVER_PWD CLIENT_PWD SERVER_CERT CLIENT_CERT CA_CERT] [--flags ...]
#
# Same arguments as run_pangu_train_leader.sh, plus --embedding_dp. EPS in the environment
# (e.g. EPS=2) adds randomized response with that eps; unset = deterministic 1-bit quantisation.
# The follower needs no flag for EmbeddingDP (it receives 0/1 activations); --compress, if any,
# must be the same on both sides.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ $# -ge 4 ] || { sed -n '2,10p' "$HERE/run_pangu_train_leader_embedding_dp.sh"; exit 2; }
DP=(--embedding_dp)
if [ -n "${EPS:-}" ]; then DP+=(--embedding_dp_eps "$EPS"); fi
exec bash "$HERE/run_pangu_train_leader.sh" "$@" "${DP[@]}"
