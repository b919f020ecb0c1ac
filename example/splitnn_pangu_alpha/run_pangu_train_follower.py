"""Party B of the two-process split training: the computation centre, Backbone (transformer blocks).

Holds no data and no vocabulary: it learns everything it needs (total steps, LR schedule) from the
leader's startup handshake and receives only activations and gradients. Usually started by
run_pangu_train_follower.sh.

    python run_pangu_train_follower.py --http_server_address 127.0.0.1:10086 \
        --remote_server_address 127.0.0.1:10087 --enable_ssl true ... (certificates)
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
from src.split_train import add_split_args, run_follower, split_defaults  # noqa: E402
from src.utils import add_training_args  # noqa: E402

logger = logging.getLogger("run_pangu_train_follower")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Split PanGu-alpha, party B (follower: transformer blocks)")
    add_training_args(parser)
    add_split_args(parser, communicator=True, data_owner=False)
    split_defaults(parser)
    add_predict_args(parser, server=True)
    parser.set_defaults(http_server_address="127.0.0.1:10086", remote_server_address="127.0.0.1:10087",
                        log_file="follower_process.log")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if args.run_type == "predict":
            run_predict(args, "follower")
        else:
            run_follower(args)
    except (ValueError, FileNotFoundError, ConnectionError, TimeoutError, RuntimeError) as err:
        logger.error("follower stopped: %s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
