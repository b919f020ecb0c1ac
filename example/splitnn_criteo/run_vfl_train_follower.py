"""Follower of the two-process split training, from already joined data (--data_path holding train/
and eval/, e.g. data/joined/follower/). See run_vfl_train_follower.sh."""
import logging
import sys

import mindspore_federated  # noqa: F401  (first: selects protobuf's fast backend)
from network_config import get_config
from split_train import data_dirs, joined_datasets, make_communicator, run_follower, run_party, set_context


def main():
    config = get_config()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s follower %(levelname)s: %(message)s")
    set_context(config)
    datasets = joined_datasets(config, *data_dirs(config.data_path), "follower")
    communicator = make_communicator(config, "follower", "leader")
    return run_party(run_follower, "follower", config, communicator, datasets)


if __name__ == "__main__":
    sys.exit(main())
