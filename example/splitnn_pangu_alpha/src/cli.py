"""Command line of the PanGu-alpha programs: flags, the run configuration file, passwords.

Nothing here imports MindSpore, so `--help` and argument errors answer at once; the programs parse
first and import the training code afterwards.

The flags follow the original MindSpore Federated example (`--mode` is the model scale, the
original's flags are accepted; the execution mode is `--exec_mode`). A run configuration file
(`--run_config`, yaml, keys = flag names) gives the local, leader and follower programs the same
settings; flags on the command line win over it.
"""
from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
from typing import Any, List, Optional, Sequence

__all__ = ["str2bool", "add_training_args", "add_split_args", "parse_with_run_config", "resolve_passwords",
           "ignore_data_flags", "output_dir", "stage_name", "MODEL_SCALES", "DEFAULT_RUN_CONFIG", "DATA_FLAGS"]

logger = logging.getLogger(__name__)

EXAMPLE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_RUN_CONFIG = os.path.join(EXAMPLE_DIR, "config", "main_job.yaml")
# the original's scales, ours (tiny, small: CPU sizes) and self_define (--num_layers, --embedding_size, --num_heads)
MODEL_SCALES = ("200B", "13B", "2.6B", "1.3B", "350M", "small", "tiny", "self_define")
EXEC_MODES = ("pynative", "graph")
# flags only the data owner (leader) uses; the follower ignores them
DATA_FLAGS = ("data_url", "eval_data_url", "vocab_model", "tokenizer_path", "synthetic", "synthetic_size",
              "train_and_eval_mode", "data_column_name", "embedding_dp", "embedding_dp_eps")
# password sources besides the flags: files, then these environment variables, then MSF_CERT_PASSWORD
# (the variable gen_certs reads)
PASSWORD_ENV = {"server_password": "MSF_SERVER_PASSWORD", "client_password": "MSF_CLIENT_PASSWORD"}

# The original example's flags that this one accepts but cannot honour (its parallel, MoE, Ascend and
# cloud settings): name -> the original's default. Giving one with another value logs one warning.
_ORIGINAL_IGNORED = {
    "device_num": "1", "distribute": "false", "load_ckpt_name": "PANGUALPHA3.ckpt", "train_url": None,
    "strategy_load_ckpt_path": "", "param_init_type": "fp32", "offline": "1", "export": "0",
    "incremental_training": "0", "enable_alltoall": "0", "hccl_connect_time": "6000", "ng_port": "33222",
    "stage_num": "1", "micro_size": "1", "eod_reset": "1", "decay_steps": "200000", "optimizer": "adam",
    "opt_offload": "0", "use_moe": "0", "expert_num": "1", "per_token_num_experts_chosen": "1",
    "sink_size": "2", "full_batch": "1", "optimizer_shard": "0", "op_level_model_parallel_num": "8",
    "expert_parallel_num": "1", "word_emb_dp": "1", "gradient_aggregation_group": "4",
    "micro_batch_interleaved": "1", "recompute_slice_activation": "0", "pre_trained_embedding": None,
    "pre_trained_backbone": None, "pre_trained_head": None, "pre_trained": None, "keep_checkpoint_max": "1",
    "save_checkpoint": "False", "ckpt_name_prefix": "pangu", "has_trained_epoches": "0",
    "has_trained_steps": "0", "parallel_mode": "stand_alone", "data_column_name": "input_ids",
    "train_and_eval_mode": "0",
}


def str2bool(value: Any) -> bool:
    """argparse type for true/false flags written as words (`--resume true`, the original's `True`)."""
    if isinstance(value, bool):
        return value
    low = str(value).strip().lower()
    if low in ("1", "true", "yes", "y", "on"):
        return True
    if low in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


class _ModeAction(argparse.Action):
    """--mode SCALE; the execution-mode values of earlier versions (pynative, graph) set --exec_mode."""

    def __call__(self, parser, namespace, values, option_string=None):
        if str(values).lower() in EXEC_MODES:
            namespace.exec_mode = str(values).lower()
            namespace.legacy_exec_mode = True
        else:
            namespace.mode = values


def add_training_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags common to the centralised trainer and the split programs (None = the --mode preset's)."""
    g = parser.add_argument_group("PanGu-alpha model and training")
    g.add_argument("--run_config", default=None,
                   help="yaml run configuration (keys = flag names; command-line flags win). The local, leader "
                        "and follower programs read config/main_job.yaml by default; 'none' for none")
    g.add_argument("--mode", "--config", dest="mode", default="tiny", metavar="SCALE", action=_ModeAction,
                   help=f"model scale: {', '.join(MODEL_SCALES)} (default tiny). self_define takes "
                        f"--num_layers, --embedding_size, --num_heads. (--config is an alias.) The values "
                        f"pynative/graph of earlier versions still select --exec_mode, with a warning")
    parser.set_defaults(legacy_exec_mode=False)
    g.add_argument("--exec_mode", default="graph", choices=EXEC_MODES,
                   help="MindSpore execution mode (default graph: each party's backward and optimizer are "
                        "compiled graphs, the fastest on CPU, see the README's Performance; pynative reuses "
                        "the forward passes' autodiff tapes instead)")
    g.add_argument("--run_type", default="train", choices=["train", "predict"],
                   help="train (default), or predict: generate text from the checkpoints of a training run "
                        "(--load_ckpt_path, --prompt/--prompt_file; README, Generate)")
    g.add_argument("--device_target", default="CPU", help="MindSpore device target (default CPU)")
    g.add_argument("--device_id", type=int, default=None, help="device id (accelerators)")
    g.add_argument("--jit_forward", type=str2bool, default=True,
                   help="in pynative mode, compile each network's forward with mindspore.jit (default true)")
    g.add_argument("--num_layers", type=int, default=None, help="layers incl. the query layer (self_define)")
    g.add_argument("--embedding_size", type=int, default=None, help="hidden size (self_define)")
    g.add_argument("--num_heads", type=int, default=None, help="attention heads (self_define)")
    g.add_argument("--per_batch_size", type=int, default=None, help="batch size (default: the scale's)")
    g.add_argument("--seq_length", type=int, default=None, help="model sequence length S (records hold S+1 ids)")
    g.add_argument("--vocab_size", type=int, default=None,
                   help="vocabulary size (default: the scale's, or the size of --vocab_model)")
    g.add_argument("--eod_id", type=int, default=None, help="end-of-document id (default 6)")
    g.add_argument("--padding_id", type=int, default=None, help="padding id (default 6)")
    g.add_argument("--seed", type=int, default=1, help="seed of weights init, dropout and data order")
    g.add_argument("--train_steps", type=int, default=None,
                   help="stop after this many steps in total (default: epoch_size full epochs)")
    g.add_argument("--epoch_size", type=int, default=1, help="number of passes over the training data")
    g.add_argument("--dropout_rate", type=float, default=None, help="dropout rate (default: the scale's)")
    g.add_argument("--data_url", default=None, help="training MindRecord file or directory")
    g.add_argument("--eval_data_url", default=None, help="evaluation MindRecord file or directory")
    g.add_argument("--log_steps", type=int, default=1, help="log the loss every N steps")
    g.add_argument("--save_ckpt_steps", "--save_checkpoint_steps", dest="save_ckpt_steps", type=int, default=1000,
                   help="save a checkpoint every N steps (0: never)")
    g.add_argument("--load_ckpt_path", default=None, help="checkpoint file or directory to start from")
    g.add_argument("--resume", type=str2bool, nargs="?", const=True, default=False,
                   help="continue from the newest checkpoint in the output folder (or --load_ckpt_path)")
    g.add_argument("--vocab_model", default=None, help="SentencePiece vocab.model (sets --vocab_size if omitted)")
    g.add_argument("--tokenizer_path", default=None,
                   help="folder holding vocab.model (the original's flag; --vocab_model wins)")
    g.add_argument("--start_lr", type=float, default=None, help="peak learning rate after warmup")
    g.add_argument("--end_lr", type=float, default=None, help="final learning rate of the cosine decay")
    g.add_argument("--warmup_steps", "--warmup_step", dest="warmup_steps", type=int, default=None,
                   help="linear warmup steps (default: min(2000, total_steps // 10))")
    g.add_argument("--weight_decay", type=float, default=0.1, help="weight decay (not on layernorm/bias)")
    g.add_argument("--loss_scale", type=float, default=None,
                   help="initial dynamic loss scale (default 2^32 centralised, 1024 split)")
    g.add_argument("--loss_scale_window", type=int, default=1000,
                   help="clean steps before the loss scale is doubled")
    g.add_argument("--clip_norm", type=float, default=1.0, help="global gradient-norm clip")
    g.add_argument("--output_dir", default=None,
                   help="checkpoints, logs and loss logs go here (default ./output/<program>, one per layout)")
    g.add_argument("--loss_log", default=None, help="write per-step losses to this .json or .csv file")
    g.add_argument("--eval_steps", type=int, default=None, help="at most this many eval batches (default all; 0: no evaluation)")
    g.add_argument("--synthetic", action="store_true",
                   help="train on generated data (src.utils.synthetic_batch) instead of --data_url")
    g.add_argument("--synthetic_size", type=int, default=1000,
                   help="batches per epoch of the synthetic data (default 1000)")
    old = parser.add_argument_group("accepted for compatibility with the original example, not used here")
    for name in _ORIGINAL_IGNORED:
        old.add_argument(f"--{name}", default=None, metavar="V", help=argparse.SUPPRESS)
    return parser


def add_split_args(parser: argparse.ArgumentParser, communicator: bool = True) -> argparse.ArgumentParser:
    """Flags of the split programs on top of `add_training_args`; `communicator`: the two-process ones."""
    from .wire_modes import WIRE_MODES  # pylint: disable=import-outside-toplevel
    g = parser.add_argument_group("split learning")
    parser.set_defaults(run_config=DEFAULT_RUN_CONFIG)
    g.add_argument("--compress", choices=WIRE_MODES, default="none",
                   help="compression of the exchanged tensors: none (yaml/*.yaml), min_max6 "
                        "(yaml/*_compressed.yaml: 6-bit min_max on activations and their gradients, 1-bit "
                        "bit_pack on the mask), min_max8 or fp16 (the same yaml with 8 bits / fp16 casts). "
                        "Both parties must use the same choice (checked at the handshake)")
    g.add_argument("--embedding_dp", type=str2bool, nargs="?", const=True, default=False,
                   help="leader: EmbeddingDP on the embedding activations sent to party B (yaml/embedding_dp.yaml: "
                        "1-bit codes, sent as 1-bit bit_pack); `--embedding_dp` or `--embedding_dp True`")
    g.add_argument("--embedding_dp_eps", type=float, default=None,
                   help="with --embedding_dp: randomized response with this eps (default: none, "
                        "deterministic 1-bit quantisation)")
    if not communicator:
        g.add_argument("--wire", action="store_true",
                       help="one process: pass every message through the codec as the communicator would "
                            "(on by default with --compress or --embedding_dp)")
    g.add_argument("--leader_layers", type=int, default=0,
                   help="split point: party A keeps the first K transformer blocks next to the embedding and "
                        "sends their output to party B instead of the bare embeddings (default 0: the original "
                        "split). Both parties must use the same K (checked at the handshake); see the README's "
                        "privacy section")
    g.add_argument("--pipeline_stages", type=int, default=1,
                   help="party B's blocks split over this many follower stages (a pipeline A -> B1 -> B2 ... -> A; "
                        "default 1). The blocks after --leader_layers are divided as evenly as possible, the first "
                        "stages taking one more. Every stage needs the same value; the leader does not need it")
    g.add_argument("--log_file", default=None, help="also write the log to this file (default: in the output folder)")
    g.add_argument("--peer_timeout", type=float, default=120.0,
                   help="seconds to wait for the peer at startup (handshake) and for a send to be accepted")
    g.add_argument("--step_timeout", type=float, default=3600.0,
                   help="seconds to wait for the peer's reply within a training step")
    if communicator:
        g.add_argument("--http_server_address", default="127.0.0.1:10087", help="ip:port this party listens on")
        g.add_argument("--remote_server_address", default="127.0.0.1:10086", help="ip:port of the peer")
        g.add_argument("--enable_ssl", type=str2bool, nargs="?", const=True, default=False,
                       help="mutual TLS between the parties (true/false)")
        g.add_argument("--server_password_file", default=None,
                       help="file holding the server certificate's password (else $MSF_SERVER_PASSWORD, "
                            "else $MSF_CERT_PASSWORD)")
        g.add_argument("--client_password_file", default=None,
                       help="file holding the client certificate's password (else $MSF_CLIENT_PASSWORD, "
                            "else $MSF_CERT_PASSWORD)")
        g.add_argument("--server_password", default=None,
                       help="the password itself (the original's flag): visible to every local user in `ps`, "
                            "prefer --server_password_file or the environment")
        g.add_argument("--client_password", default=None,
                       help="the password itself (visible in `ps`; prefer --client_password_file)")
        g.add_argument("--server_cert_path", default=None, help="server certificate (.p12 or .pem with key)")
        g.add_argument("--client_cert_path", default=None, help="client certificate (.p12 or .pem with key)")
        g.add_argument("--ca_cert_path", default=None, help="CA certificate the peer is verified against")
        g.add_argument("--crl_path", default=None, help="optional certificate revocation list")
    return parser


def _config_tokens(parser: argparse.ArgumentParser, path: str) -> List[str]:
    """The run configuration file as command-line tokens (so argparse checks every value)."""
    import yaml  # pylint: disable=import-outside-toplevel
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--run_config: no such file: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"--run_config {path}: not a valid yaml file: {err}") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ValueError(f"--run_config {path}: expected a mapping of flag names to values, got "
                         f"{type(data).__name__}")
    flags = {}
    for action in parser._actions:  # pylint: disable=protected-access
        for option in action.option_strings:
            if option.startswith("--"):
                flags[option[2:]] = action
    tokens: List[str] = []
    for key, value in data.items():
        action = flags.get(str(key))
        if action is None or key in ("run_config", "help"):
            close = difflib.get_close_matches(str(key), list(flags), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"--run_config {path}: unknown setting {key!r}{hint}")
        if isinstance(value, (dict, list)):
            raise ValueError(f"--run_config {path}: {key}: expected one value, got {type(value).__name__}")
        if action.nargs == 0:           # store_true flags
            if value not in (True, False):
                raise ValueError(f"--run_config {path}: {key}: expected true or false, got {value!r}")
            if value:
                tokens.append(f"--{key}")
        elif value is not None:
            tokens += [f"--{key}", str(value)]
    return tokens


def parse_with_run_config(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None
                          ) -> argparse.Namespace:
    """Parse `argv` on top of the settings of its --run_config file; then normalise the original's flags."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first, _ = parser.parse_known_args(argv)
    path = getattr(first, "run_config", None)
    tokens: List[str] = []
    if path and str(path).lower() != "none":
        try:
            tokens = _config_tokens(parser, path)
        except (ValueError, FileNotFoundError) as err:
            parser.error(str(err))
    args = parser.parse_args(tokens + argv)
    _normalise(parser, args)
    return args


def _normalise(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--mode pynative/graph (earlier versions), the scale check, the ignored flags."""
    if getattr(args, "legacy_exec_mode", False):
        logger.warning("--mode %s: --mode is the model scale (as in the original example); the execution mode "
                       "is --exec_mode. Using --exec_mode %s", args.exec_mode, args.exec_mode)
    scales = {s.lower(): s for s in MODEL_SCALES}
    if str(args.mode).lower() not in scales:
        parser.error(f"--mode {args.mode!r}: choose a model scale among {', '.join(MODEL_SCALES)}")
    args.mode = scales[str(args.mode).lower()]
    if args.tokenizer_path and not args.vocab_model:
        candidate = os.path.join(args.tokenizer_path, "vocab.model")
        args.vocab_model = candidate if os.path.isfile(candidate) else None
        if args.vocab_model is None:
            logger.warning("--tokenizer_path %s holds no vocab.model: not used", args.tokenizer_path)
    ignored = [f"--{name} {getattr(args, name)}" for name, default in _ORIGINAL_IGNORED.items()
               if getattr(args, name) is not None and getattr(args, name) != default]
    if ignored:
        logger.warning("accepted for compatibility with the original example but not used here (parallel, "
                       "MoE, Ascend and cloud settings): %s", ", ".join(ignored))


def ignore_data_flags(args: argparse.Namespace, defaults: argparse.Namespace, argv: Sequence[str]) -> None:
    """The follower holds no data: the data owner's flags of a shared command line (or run
    configuration) are dropped; one info line names those given on the command line."""
    given = [name for name in DATA_FLAGS
             if any(a == f"--{name}" or a.startswith(f"--{name}=") for a in argv)]
    if given:
        logger.info("follower: ignoring %s (the data owner's flags; party B holds no data)",
                    ", ".join(f"--{n}" for n in given))
    for name in DATA_FLAGS:
        if hasattr(args, name):
            setattr(args, name, getattr(defaults, name))


def resolve_passwords(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """Certificate passwords from --*_password_file, else the environment, else the flags (with a warning)."""
    for name, env in PASSWORD_ENV.items():
        path = getattr(args, f"{name}_file", None)
        if getattr(args, name):
            if any(a == f"--{name}" or a.startswith(f"--{name}=") for a in argv):
                logger.warning("--%s on the command line is visible to every local user (ps); use --%s_file "
                               "or $%s instead", name, name, env)
            continue
        if path:
            try:
                with open(path, encoding="utf-8") as f:
                    setattr(args, name, f.read().rstrip("\r\n"))
            except OSError as err:
                raise ValueError(f"--{name}_file: cannot read {path}: {err.strerror}") from None
        else:
            setattr(args, name, os.environ.get(env) or os.environ.get("MSF_CERT_PASSWORD") or None)


def stage_name(index: int) -> str:
    """Name of follower stage `index` (0-based) of --pipeline_stages: follower, follower2, follower3, ...
    It is the stage's communicator server name, the name its TLS certificates must carry, its output
    folder and log (output/follower2/follower2.log) and its checkpoint folder."""
    return "follower" if index == 0 else f"follower{index + 1}"


def output_dir(args: argparse.Namespace, program: str) -> str:
    """This run's output folder: --output_dir, else ./output/<program> (local, leader, follower)."""
    if not args.output_dir:
        args.output_dir = os.path.join("output", program)
    return args.output_dir
