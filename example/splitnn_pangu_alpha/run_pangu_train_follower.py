"""Party B of the two-process split training: the computation centre, Backbone (transformer blocks).

Holds no data and no vocabulary: it learns everything it needs (total steps, LR schedule) from the
leader's startup handshake and receives only activations and gradients. Takes the same command line
and run configuration as the leader (data flags are ignored, with one info line). Usually started by
run_pangu_train_follower.sh.

    MSF_CERT_PASSWORD=... python run_pangu_train_follower.py --http_server_address 127.0.0.1:10086 \
        --remote_server_address 127.0.0.1:10087 --enable_ssl true ... (certificates)

With --pipeline_stages N it is one of N stages holding the blocks between them (--stage_index,
--next_stage_address; README, "Party B as pipeline stages").
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
from src.cli import (add_split_args, add_training_args, ignore_data_flags, output_dir,  # noqa: E402
                     parse_with_run_config, resolve_passwords, stage_name)

logger = logging.getLogger("run_pangu_train_follower")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Split PanGu-alpha, party B (follower: transformer blocks)")
    add_training_args(parser)
    add_split_args(parser, communicator=True)
    add_predict_args(parser, server=True)
    g = parser.add_argument_group("pipeline stage (with --pipeline_stages N > 1)")
    g.add_argument("--stage_index", type=int, default=0,
                   help="which stage this process is, 0 to N-1 (default 0). Stage 0 talks to the leader; stage i > 0 "
                        "is the party named follower<i+1> (follower2, ...; its certificates must carry that name) and "
                        "its --remote_server_address is stage i-1's --http_server_address")
    g.add_argument("--next_stage_address", default=None,
                   help="ip:port of stage i+1 (its --http_server_address); every stage but the last needs it")
    parser.set_defaults(loss_scale=1024.0, http_server_address="127.0.0.1:10086",
                        remote_server_address="127.0.0.1:10087")
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parse_with_run_config(parser, argv)
    from src.utils import setup_logging  # pylint: disable=import-outside-toplevel
    setup_logging()
    ignore_data_flags(args, parser.parse_args([]), argv)
    name = stage_name(args.stage_index)   # follower; follower2, ... for the further pipeline stages
    output_dir(args, name)
    args.log_file = args.log_file if args.log_file is not None else os.path.join(args.output_dir, f"{name}.log")
    resolve_passwords(args, argv)
    return args


def _stop_on_sigterm(*_):
    """SIGTERM stops like an error does: the peer is told why (ABORT) before this process exits."""
    raise SystemExit("stopped by SIGTERM")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    import mindspore_federated  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import  (protobuf backend first)
    from src.split_train import run_follower  # pylint: disable=import-outside-toplevel
    try:
        if args.run_type == "predict" and args.pipeline_stages > 1:
            raise ValueError("--run_type predict serves one follower process: --pipeline_stages is for training")
        if args.run_type == "predict":
            from src.predict import run_predict  # pylint: disable=import-outside-toplevel
            run_predict(args, "follower")
        else:
            run_follower(args)
    except (ValueError, FileNotFoundError, ConnectionError, TimeoutError, RuntimeError) as err:
        hint = ""
        if isinstance(err, (ConnectionError, TimeoutError)) and "--resume" not in str(err):
            hint = (" -- once both parties can run again, restart both with --resume" if args.pipeline_stages == 1
                    else " -- once every party can run again, restart all with --resume")
        logger.error("%s stopped: %s%s", stage_name(args.stage_index), err, hint)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
