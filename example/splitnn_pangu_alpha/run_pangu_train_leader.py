"""Party A of the two-process split training: data owner, Embedding + Head (SPEC §3.1).

Starts its communicator server on --http_server_address, shakes hands with the follower at
--remote_server_address (same model settings, same starting step), then trains: only embedding
activations, the attention mask, hidden states, their gradients and a few scalars per step cross
to party B. Reads the run configuration (--run_config, config/main_job.yaml by default) like the
local and follower programs. Usually started by run_pangu_train_leader.sh.

    MSF_CERT_PASSWORD=... python run_pangu_train_leader.py --http_server_address 127.0.0.1:10087 \
        --remote_server_address 127.0.0.1:10086 --data_url data/mindrecord/train \
        --eval_data_url data/mindrecord/eval --vocab_model data/vocab/pangu_sp.model \
        --enable_ssl true --server_cert_path certs/leader_server.p12 \
        --client_cert_path certs/leader_client.p12 --ca_cert_path certs/ca.pem
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from src.predict_args import add_predict_args  # noqa: E402
from src.cli import (add_split_args, add_training_args, output_dir, parse_with_run_config,  # noqa: E402
                     resolve_passwords)

logger = logging.getLogger("run_pangu_train_leader")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Split PanGu-alpha, party A (leader: data, embedding, head)")
    add_training_args(parser)
    add_split_args(parser, communicator=True)
    add_predict_args(parser)
    parser.set_defaults(loss_scale=1024.0, http_server_address="127.0.0.1:10087",
                        remote_server_address="127.0.0.1:10086")
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parse_with_run_config(parser, argv)
    if args.run_type == "train" and not args.synthetic and not args.data_url:
        parser.error("--data_url is required (the leader owns the data), or --synthetic for generated data")
    output_dir(args, "leader")
    args.log_file = args.log_file if args.log_file is not None else os.path.join(args.output_dir, "leader.log")
    args.loss_log = args.loss_log or os.path.join(args.output_dir, "loss.json")
    resolve_passwords(args, argv)
    return args


def _stop_on_sigterm(*_):
    """SIGTERM stops like an error does: the peer is told why (ABORT) before this process exits."""
    raise SystemExit("stopped by SIGTERM")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    from src.utils import setup_logging  # pylint: disable=import-outside-toplevel
    setup_logging()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    import mindspore_federated  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import  (protobuf backend first)
    from src.split_train import run_leader  # pylint: disable=import-outside-toplevel
    try:
        if args.run_type == "predict":
            from src.predict import run_predict  # pylint: disable=import-outside-toplevel
            run_predict(args, "leader")
        else:
            run_leader(args)
    except (ValueError, FileNotFoundError, ConnectionError, TimeoutError, RuntimeError) as err:
        hint = ""
        if isinstance(err, (ConnectionError, TimeoutError)) and "--resume" not in str(err):
            hint = " -- once both parties can run again, restart both with --resume"
        logger.error("leader stopped: %s%s", err, hint)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
