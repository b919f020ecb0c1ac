#!/usr/bin/env bash
# run_vfl_train_local.sh with label differential privacy (LabelDP, eps from yaml_files/leader_top.yaml).
exec bash "$(dirname "${BASH_SOURCE[0]}")/run_vfl_train_local.sh" "$@" --label_dp True
