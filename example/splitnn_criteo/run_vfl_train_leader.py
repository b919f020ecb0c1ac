"""Leader of the two-process split training, from already joined data (--data_path holding train/
and eval/, e.g. data/joined/leader/). See run_vfl_train_leader.sh."""
import logging
import sys

import mindspore_federated  # noqa: F401  (first: selects protobuf's fast backend)
from network_config import get_config
from split_train import data_dirs, joined_datasets, make_communicator, run_leader, run_party, set_context


def main():
    config = get_config()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s leader %(levelname)s: %(message)s")
    set_context(config)
    datasets = joined_datasets(config, *data_dirs(config.data_path), "leader")
    communicator = make_communicator(config, "leader", "follower")
    return run_party(run_leader, "leader", config, communicator, datasets)


if __name__ == "__main__":
    sys.exit(main())
