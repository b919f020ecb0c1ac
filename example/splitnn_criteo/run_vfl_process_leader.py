"""Leader process: data join of the train and eval tables with the follower (ECDH-PSI), then
split training over the same communicator. See run_vfl_process_leader.sh."""
import logging
import sys

import mindspore_federated  # noqa: F401  (first: selects protobuf's fast backend)
from mindspore_federated import FLDataWorker
from network_config import get_config
from split_train import joined_datasets, run_leader, run_party, set_context

logger = logging.getLogger("splitnn_criteo")
PEER = "follower"


def data_join_config(config, role, peer):
    """The FLDataWorker settings (the original's keys) from the example's configuration."""
    return {"role": role, "server_name": role, "remote_server_name": peer,
            "http_server_address": config.http_server_address, "remote_server_address": config.remote_server_address,
            "main_table_files": config.raw_dataset_dir, "output_dir": config.dataset_dir,
            "data_schema_path": config.data_schema_path, "primary_key": config.primary_key,
            "bucket_num": config.bucket_num, "store_type": config.store_type, "shard_num": config.shard_num,
            "join_type": config.join_type, "thread_num": config.thread_num,
            "enable_ssl": config.enable_ssl, "server_password": config.server_password,
            "client_password": config.client_password, "server_cert_path": config.server_cert_path,
            "client_cert_path": config.client_cert_path, "ca_cert_path": config.ca_cert_path,
            "crl_path": config.crl_path}


def join_both_splits(config, role, peer):
    """Join the train table, then the eval table; returns the communicator for training."""
    cfg = data_join_config(config, role, peer)
    worker = FLDataWorker(cfg)
    worker.do_worker()
    logger.info("train dataset export is done: %d shared samples", worker.intersection_size)
    cfg.update(main_table_files=config.raw_eval_dataset_dir, output_dir=config.eval_dataset_dir)
    worker = FLDataWorker(cfg)  # reuses the communicator of the first join
    worker.do_worker()
    logger.info("eval dataset export is done: %d shared samples", worker.intersection_size)
    return worker.communicator()


def main():
    config = get_config()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s leader %(levelname)s: %(message)s")
    set_context(config)
    communicator = join_both_splits(config, "leader", PEER)
    datasets = joined_datasets(config, config.dataset_dir, config.eval_dataset_dir, "leader")
    return run_party(run_leader, "leader", config, communicator, datasets)


if __name__ == "__main__":
    sys.exit(main())
