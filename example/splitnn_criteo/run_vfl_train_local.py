"""Both parties in one process, from the joined data of both (after the data join).

    python run_vfl_train_local.py [--leader_data_path data/joined/leader/] \
        [--follower_data_path data/joined/follower/] [--label_dp True] [--epochs 4]
"""
import logging

import mindspore_federated  # noqa: F401  (first: selects protobuf's fast backend)
from network_config import get_config
from split_train import Follower, Leader, data_dirs, joined_datasets, log_step, set_context

logger = logging.getLogger("splitnn_criteo")


def main():
    config = get_config()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    set_context(config)
    datasets = {role: joined_datasets(config, *data_dirs(path), role)
                for role, path in (("leader", config.leader_data_path), ("follower", config.follower_data_path))}
    train_size = datasets["leader"][0].get_dataset_size()
    leader, follower = Leader(config), Follower(config)
    if config.resume:
        leader.load()
        follower.load()
    for epoch in range(config.epochs):
        pairs = zip(datasets["leader"][0].create_dict_iterator(num_epochs=1),
                    datasets["follower"][0].create_dict_iterator(num_epochs=1))
        for step, (item, follower_item) in enumerate(pairs, start=1):
            follower_embedding = follower.forward(follower_item)
            loss, follower_scale = leader.train_step(item, follower_embedding)
            follower.backward(follower_item, follower_scale)
            log_step(config, epoch, step, train_size, loss)
        leader.save()
        follower.save()
        pairs = zip(datasets["leader"][1].create_dict_iterator(num_epochs=1),
                    datasets["follower"][1].create_dict_iterator(num_epochs=1))
        for item, follower_item in pairs:
            leader.eval_step(item, follower.eval_forward(follower_item))
        logger.info("epoch %d auc: %f", epoch, leader.auc())


if __name__ == "__main__":
    main()
