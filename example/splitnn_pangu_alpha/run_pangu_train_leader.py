"""Party A of the two-process split training: data owner, Embedding + Head (SPEC §3.1).

Starts its communicator server on --http_server_address, shakes hands with the follower at
--remote_server_address (same model settings, same starting step), then trains: only embedding
activations, the attention mask, hidden states, their gradients and a few scalars per step cross
to party B. Usually started by run_pangu_train_leader.sh.

    python run_pangu_train_leader.py --http_server_address 127.0.0.1:10087 \
        --remote_server_address 127.0.0.1:10086 --data_url data/mindrecord/train \
        --eval_data_url data/mindrecord/eval --vocab_model data/vocab/pangu_sp.model \
        --enable_ssl true --server_password ... --client_password ... \
        --server_cert_path certs/leader_server.p12 --client_cert_path certs/leader_client.p12 \
        --ca_cert_path certs/ca.pem
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mindspore_federated  # noqa: E402,F401  (before mindspore: protobuf backend)

from src.predict import add_predict_args, run_predict  # noqa: E402
from src.split_train import add_split_args, run_leader, split_defaults  # noqa: E402
from src.utils import add_training_args  # noqa: E402

logger = logging.getLogger("run_pangu_train_leader")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Split PanGu-alpha, party A (leader: data, embedding, head)")
    add_training_args(parser)
    add_split_args(parser, communicator=True)
    split_defaults(parser)
    add_predict_args(parser)
    parser.set_defaults(http_server_address="127.0.0.1:10087", remote_server_address="127.0.0.1:10086",
                        log_file="leader_process.log")
    args = parser.parse_args(argv)
    if args.run_type == "train" and not args.synthetic and not args.data_url:
        parser.error("--data_url is required (the leader owns the data), or --synthetic for generated data")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if args.run_type == "predict":
            run_predict(args, "leader")
        else:
            run_leader(args)
    except (ValueError, FileNotFoundError, ConnectionError, TimeoutError, RuntimeError) as err:
        logger.error("leader stopped: %s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
