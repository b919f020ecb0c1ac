#!/usr/bin/env bash
# run_vfl_train_leader.sh with label differential privacy: the leader trains on labels randomised
# by LabelDP (eps from yaml_files/leader_top.yaml, privacy.label_dp.eps). Same arguments.
exec bash "$(dirname "${BASH_SOURCE[0]}")/run_vfl_train_leader.sh" "$@" --label_dp True
