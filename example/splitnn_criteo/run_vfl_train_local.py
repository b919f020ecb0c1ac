"""Both parties in one process, from the joined data of both (after the data join).

    python run_vfl_train_local.py [--leader_data_path data/joined/leader/] \
        [--follower_data_path data/joined/follower/] [--label_dp True] [--epochs 4]
"""
import logging
import os

import mindspore_federated  # noqa: F401  (first: selects protobuf's fast backend)
from criteo_dataset import create_joined_dataset
from network_config import get_config
from split_train import Follower, Leader, check_sizes, log_step, set_context

logger = logging.getLogger("splitnn_criteo")


def main():
    config = get_config()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    set_context(config)
    datasets = {}
    for role, path in (("leader", config.leader_data_path), ("follower", config.follower_data_path)):
        datasets[role] = [create_joined_dataset(os.path.join(path, split), train_mode=split == "train",
                                                batch_size=config.batch_size, seed=config.seed, role=role)
                          for split in ("train", "eval")]
    train_size, eval_size = datasets["leader"][0].get_dataset_size(), datasets["leader"][1].get_dataset_size()
    check_sizes(train_size, eval_size)
    leader, follower = Leader(config), Follower(config)
    if config.resume:
        leader.load()
        follower.bottom.load_ckpt("train")
    for epoch in range(config.epochs):
        pairs = zip(datasets["leader"][0].create_dict_iterator(num_epochs=1),
                    datasets["follower"][0].create_dict_iterator(num_epochs=1))
        for step, (item, follower_item) in enumerate(pairs, start=1):
            follower_embedding = follower.forward(follower_item)
            loss, follower_scale = leader.train_step(item, follower_embedding)
            follower.backward(follower_item, follower_scale)
            log_step(config, epoch, step, train_size, loss)
        leader.save()
        follower.bottom.save_ckpt()
        pairs = zip(datasets["leader"][1].create_dict_iterator(num_epochs=1),
                    datasets["follower"][1].create_dict_iterator(num_epochs=1))
        for item, follower_item in pairs:
            leader.eval_step(item, follower.eval_forward(follower_item))
        logger.info("epoch %d auc: %f", epoch, leader.auc())


if __name__ == "__main__":
    main()
