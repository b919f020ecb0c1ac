"""Split PanGu-alpha with both parties in one process, next to centralised training, and the plot.

With no arguments (the example's main job):
  1. builds what is missing: embedded corpus -> SentencePiece vocabulary -> MindRecord records
     (prepare_data.prepare, ~1 min the first time, skipped afterwards);
  2. trains the split model (party A: embedding + head, party B: blocks, tensors handed over in
     memory) with the log line `epoch E step S/TOTAL loss: L` and the eval perplexity;
  3. trains the centralised model with the same settings, data and initial weights
     (train_centralized.run) -- unless --no_centralized;
  4. writes output/local/loss.png with both loss curves (and output/local/*_loss.json).

Settings come from config/main_job.yaml (--run_config); every flag of train_centralized.py is accepted
(e.g. --mode small --train_steps 1000, --synthetic, --data_url/--eval_data_url/--vocab_model for your own
records).
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
from typing import Any, Dict, Optional, Sequence

EXAMPLE_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, EXAMPLE_DIR)

from src.cli import add_split_args, add_training_args, output_dir, parse_with_run_config, str2bool  # noqa: E402
from src.predict_args import add_predict_args  # noqa: E402

logger = logging.getLogger("run_pangu_train_local")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Split PanGu-alpha in one process, compared with centralised training")
    add_training_args(parser)
    add_split_args(parser, communicator=False)
    add_predict_args(parser)
    parser.set_defaults(loss_scale=1024.0)
    g = parser.add_argument_group("this script")
    g.add_argument("--data_dir", default=os.path.join(EXAMPLE_DIR, "data"),
                   help="where the default corpus, vocabulary and records are built when --data_url is not given")
    g.add_argument("--prepare_vocab_size", type=int, default=4000,
                   help="SentencePiece pieces when the vocabulary is built here (default 4000: on the embedded "
                        "corpus a few minutes of CPU training learn more with it than with a larger one)")
    g.add_argument("--no_centralized", action="store_true", help="skip the centralised run (and its curve)")
    g.add_argument("--prepare_only", action="store_true",
                   help="only build the data of this run configuration (corpus, vocabulary, records under "
                        "--data_dir) and exit: what the two-server leader reads")
    g.add_argument("--show_model", type=str2bool, default=True,
                   help="after training, log the eval perplexity next to the unigram baseline and completions "
                        "of a few eval prompts by the split and the centralised model (default true)")
    g.add_argument("--plot", default=None, help="figure path (default OUTPUT_DIR/loss.png; 'none' to skip)")
    args = parse_with_run_config(parser, argv)
    output_dir(args, "local")
    args.log_file = args.log_file if args.log_file is not None else os.path.join(args.output_dir, "local.log")
    return args


def ensure_data(args: argparse.Namespace) -> None:
    """Build the default corpus/vocab/records when no data was given (idempotent)."""
    if args.synthetic or args.data_url:
        if args.data_url and not os.path.exists(args.data_url):
            raise FileNotFoundError(f"--data_url: no such file or directory: {args.data_url}")
        return
    from prepare_data import prepare  # pylint: disable=import-outside-toplevel
    from src.pangu_alpha_config import get_config  # pylint: disable=import-outside-toplevel
    seq = args.seq_length or get_config(args.mode).seq_length
    paths = prepare(args.data_dir, seq_length=seq + 1, vocab_size=args.prepare_vocab_size,
                    vocab_model=args.vocab_model)
    args.data_url = paths["train_data"]
    args.eval_data_url = args.eval_data_url or paths["eval_data"]
    args.vocab_model = paths["vocab_model"]


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    from src.utils import setup_logging  # pylint: disable=import-outside-toplevel
    setup_logging()
    import mindspore_federated  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import  (protobuf backend first)
    from src.split_train import run_local  # pylint: disable=import-outside-toplevel
    if args.run_type == "predict" and args.pipeline_stages > 1:
        raise ValueError("--run_type predict runs party B as one follower: --pipeline_stages is for training")
    if args.run_type == "predict":
        from src.predict import run_predict  # pylint: disable=import-outside-toplevel
        default_vocab = os.path.join(args.data_dir, "vocab", "pangu_sp.model")
        if not args.vocab_model and os.path.isfile(default_vocab):
            args.vocab_model = default_vocab  # the vocabulary the main job built and trained with
        return {"generated": run_predict(args, "local")}
    os.makedirs(args.output_dir, exist_ok=True)
    ensure_data(args)
    if args.prepare_only:
        logger.info("data ready: --data_url %s --eval_data_url %s --vocab_model %s", args.data_url,
                    args.eval_data_url, args.vocab_model)
        return {"data_url": args.data_url, "eval_data_url": args.eval_data_url, "vocab_model": args.vocab_model}
    split_args = copy.copy(args)
    split_args.loss_log = args.loss_log or os.path.join(args.output_dir, "split_loss.json")
    stages = f" as {args.pipeline_stages} pipeline stages" if args.pipeline_stages > 1 else ""
    logger.info("== split training (party A and party B%s in this process) ==", stages)
    split = run_local(split_args)
    result: Dict[str, Any] = {"split": split}
    curves = {f"split learning (A: embedding + head, B: blocks{stages})": split_args.loss_log}
    if not args.no_centralized:
        import train_centralized  # pylint: disable=import-outside-toplevel
        central_args = copy.copy(args)
        central_args.loss_log = os.path.join(args.output_dir, "central_loss.json")
        central_args.output_dir = os.path.join(args.output_dir, "centralized")
        logger.info("== centralised training, same settings, data and initial weights ==")
        central = train_centralized.run(central_args)
        result["centralized"] = central
        curves["centralised PanGu-alpha"] = central_args.loss_log
        pairs = list(zip(split["losses"], central["losses"]))
        if pairs:
            worst = max(abs(a - b) / max(abs(b), 1e-12) for a, b in pairs)
            logger.info("split vs centralised: %d steps, largest relative loss difference %.3g", len(pairs), worst)
            result["max_rel_diff"] = worst
    if args.show_model:
        from src.showcase import show_model  # pylint: disable=import-outside-toplevel
        result["showcase"] = show_model(args, split["config"], split, result.get("centralized"),
                                        os.path.join(args.output_dir, "centralized"))
    if (args.plot or "").lower() != "none":
        from plot_loss import plot_curves  # pylint: disable=import-outside-toplevel
        figure = args.plot or os.path.join(args.output_dir, "loss.png")
        plot_curves(curves, figure, title=f"PanGu-alpha {args.mode}: split vs centralised training")
        logger.info("loss curves written to %s", os.path.abspath(figure))
        result["figure"] = os.path.abspath(figure)
    return result


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        logging.getLogger("run_pangu_train_local").error("stopped: %s", error)
        sys.exit(1)
