"""Follower process: data join with the leader, then split training over the same communicator.
See run_vfl_process_follower.sh."""
import logging
import sys

import mindspore_federated  # noqa: F401  (first: selects protobuf's fast backend)
from network_config import get_config
from run_vfl_process_leader import join_both_splits
from split_train import joined_datasets, run_follower, run_party, set_context

logger = logging.getLogger("splitnn_criteo")
PEER = "leader"


def main():
    config = get_config()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s follower %(levelname)s: %(message)s")
    set_context(config)
    communicator = join_both_splits(config, "follower", PEER)
    datasets = joined_datasets(config, config.dataset_dir, config.eval_dataset_dir, "follower")
    return run_party(run_follower, "follower", config, communicator, datasets)


if __name__ == "__main__":
    sys.exit(main())
