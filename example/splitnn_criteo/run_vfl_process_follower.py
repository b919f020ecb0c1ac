"""Follower process: data join with the leader, then split training over the same communicator.
See run_vfl_process_follower.sh."""
import logging

import mindspore_federated  # noqa: F401  (first: selects protobuf's fast backend)
from criteo_dataset import create_joined_dataset
from network_config import get_config
from run_vfl_process_leader import join_both_splits
from split_train import Follower, check_sizes, set_context

logger = logging.getLogger("splitnn_criteo")
PEER = "leader"


def main():
    config = get_config()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s follower %(levelname)s: %(message)s")
    set_context(config)
    communicator = join_both_splits(config, "follower", PEER)
    ds_train = create_joined_dataset(config.dataset_dir, train_mode=True, batch_size=config.batch_size,
                                     seed=config.seed, role="follower")
    ds_eval = create_joined_dataset(config.eval_dataset_dir, train_mode=False, batch_size=config.batch_size,
                                    seed=config.seed, role="follower")
    check_sizes(ds_train.get_dataset_size(), ds_eval.get_dataset_size())
    follower = Follower(config)
    if config.resume:
        follower.bottom.load_ckpt("train")
    for epoch in range(config.epochs):
        for item in ds_train.create_dict_iterator(num_epochs=1):
            communicator.send_tensors(PEER, follower.forward(item))
            follower.backward(item, communicator.receive(PEER))
        follower.bottom.save_ckpt()
        for item in ds_eval.create_dict_iterator(num_epochs=1):
            communicator.send_tensors(PEER, follower.eval_forward(item))
        logger.info("epoch %d done", epoch)
    communicator.close()


if __name__ == "__main__":
    main()
