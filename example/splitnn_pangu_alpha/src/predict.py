"""`--run_type predict`: generate text from the checkpoints of a training run, in the three layouts.

* centralised (`train_centralized.py`): the whole model in one process;
* split, one process (`run_pangu_train_local.py`): party A (embedding, query layer, head, the
  tokenizer) and party B (blocks, served by `mindspore_federated.inference.InferenceService`)
  exchange dicts of tensors in memory;
* split, two processes (`run_pangu_train_leader.py` / `run_pangu_train_follower.py`): the same
  messages over the communicator (gRPC, mutual TLS); the follower serves sessions until the
  leader says goodbye (or forever with `--serve_forever`).

`--load_ckpt_path` is a training run's `--output_dir` (or a checkpoint file): each party finds its
own newest checkpoints there (A: `checkpoints/leader/{embedding,head}_loss_net_step_N.ckpt`,
B: `checkpoints/follower/backbone_loss_net_step_N.ckpt`, centralised: `pangu_centralized_step_N.ckpt`
or `centralized/...`). A checkpoint that does not fit the model built from the flags is refused
with the first mismatching parameters named.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import mindspore as ms
from mindspore import nn

from mindspore_federated.inference import InferenceClient, InferenceService

from .generate import GenerateOptions, PanguGenerator, generate_ids, options_from_args
from .incremental import BlocksDecoder, BlocksSession
from .pangu_alpha import PanguAlphaBackbone, PanguAlphaHead
from .pangu_alpha_config import PanguAlphaConfig
from .split_generate import PanguBlocksBackend, RemoteBlocks, describe_capacity
from .utils import latest_checkpoint

logger = logging.getLogger(__name__)

__all__ = ["read_prompts", "find_checkpoint", "load_part", "save_as_training_run", "LeaderModel",
           "follower_decoder", "central_generator", "split_local_generator", "generate_texts", "one_line",
           "run_predict", "run_predict_central", "run_predict_local", "run_predict_leader", "run_predict_follower",
           "CENTRAL_PREFIX", "PREFIXES"]

CENTRAL_PREFIX = "pangu_centralized"
PREFIXES = {"embedding": "embedding_loss_net", "head": "head_loss_net", "backbone": "backbone_loss_net"}


def read_prompts(args: argparse.Namespace) -> List[str]:
    prompts = list(args.prompt or [])
    if args.prompt_file:
        if not os.path.isfile(args.prompt_file):
            raise FileNotFoundError(f"--prompt_file: no such file: {args.prompt_file}")
        with open(args.prompt_file, encoding="utf-8") as fin:
            prompts.extend(line.strip() for line in fin if line.strip())
    if not prompts:
        raise ValueError("--run_type predict needs a --prompt TEXT (repeatable) or a --prompt_file")
    return prompts


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
def find_checkpoint(path: Optional[str], prefix: str, subdirs: Sequence[str] = ()) -> Tuple[str, int]:
    """(file, step) of the newest `<prefix>_step_N.ckpt` in `path` or its `subdirs`, or `path` itself."""
    if not path:
        raise ValueError("--run_type predict needs --load_ckpt_path (the --output_dir of a training run, or a "
                         "checkpoint file)")
    if os.path.isfile(path):
        step = _named_step(path)
        if step is None:
            raise ValueError(f"--load_ckpt_path {path}: not a <name>_step_N.ckpt checkpoint")
        if os.path.basename(path).startswith(prefix + "_step_"):
            return path, step
        # a file of the party's other sub-network: take this one of the same step beside it
        other = os.path.join(os.path.dirname(path), f"{prefix}_step_{step}.ckpt")
        if not os.path.isfile(other):
            raise FileNotFoundError(f"--load_ckpt_path names {path}; {other} (the same step) is missing")
        return other, step
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--load_ckpt_path: no such file or directory: {path}")
    places = [path] + [os.path.join(path, d) for d in subdirs]
    for place in places:
        found = latest_checkpoint(place, prefix)
        if found is not None:
            return found
    raise FileNotFoundError(f"--load_ckpt_path: no {prefix}_step_N.ckpt in {', '.join(places)}")


def _named_step(path: str) -> Optional[int]:
    match = re.search(r"_step_(\d+)\.ckpt$", path)
    return int(match.group(1)) if match else None


class _Holder(nn.Cell):
    """Gives a backbone part its checkpoint names (`backbone.<path>`)."""

    def __init__(self, backbone: nn.Cell) -> None:
        super().__init__()
        self.backbone = backbone


def load_part(cell: nn.Cell, files: Sequence[str], config: PanguAlphaConfig) -> None:
    """Load the weights of `cell` (names `backbone.*`) from `files`; a checkpoint of another model
    configuration is a ValueError naming the parameters that do not fit."""
    stored: Dict[str, Any] = {}
    for file in files:
        stored.update(ms.load_checkpoint(file))
    problems: List[str] = []
    for param in cell.get_parameters():
        value = stored.get(param.name)
        if value is None:
            problems.append(f"{param.name} is missing")
        elif tuple(value.shape) != tuple(param.shape):
            problems.append(f"{param.name} is {list(value.shape)} in the checkpoint, {list(param.shape)} here")
        else:
            param.set_data(value.astype(param.dtype) if value.dtype != param.dtype else value)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"{', '.join(files)} does not fit the model built from the flags (seq_length "
                         f"{config.seq_length}, hidden {config.hidden_size}, {config.num_layers} layers, vocab "
                         f"{config.vocab_size}): {'; '.join(problems[:3])}{more}. Use the model flags of the "
                         f"training run (--config, --seq_length, --vocab_model / --vocab_size)")


def save_as_training_run(backbone: PanguAlphaBackbone, root: str, step: int = 1) -> Dict[str, str]:
    """Write a whole backbone's weights in the layout a training run leaves in its --output_dir
    (centralised + the three split sub-networks), e.g. to serve given weights; returns the files."""
    params = {p.name: p for p in _Holder(backbone).get_parameters()}
    layout = {os.path.join("centralized", CENTRAL_PREFIX): ("backbone.",),
              os.path.join("checkpoints", "leader", PREFIXES["embedding"]): ("backbone.embedding.",),
              os.path.join("checkpoints", "leader", PREFIXES["head"]): ("backbone.layernorm.", "backbone.top_query"),
              os.path.join("checkpoints", "follower", PREFIXES["backbone"]): ("backbone.blocks.",)}
    files = {}
    for stem, prefixes in layout.items():
        path = os.path.join(root, f"{stem}_step_{step}.ckpt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        ms.save_checkpoint([{"name": k, "data": v} for k, v in params.items() if k.startswith(prefixes)], path)
        files[os.path.basename(stem)] = path
    return files


class LeaderModel:
    """Party A's parts for generation: embedding, final LayerNorm + query layer, head."""

    def __init__(self, config: PanguAlphaConfig, ckpt_path: Optional[str] = None) -> None:
        self.config = config
        self.backbone = PanguAlphaBackbone(config, parts=("embedding", "top"), init=ckpt_path is None)
        self.holder = _Holder(self.backbone)
        self.head = PanguAlphaHead(config)
        self.files: List[str] = []
        if ckpt_path is not None:
            subdirs = (os.path.join("checkpoints", "leader"), "leader")
            emb, step_e = find_checkpoint(ckpt_path, PREFIXES["embedding"], subdirs)
            head, step_h = find_checkpoint(ckpt_path, PREFIXES["head"], subdirs)
            if step_e != step_h:
                raise ValueError(f"--load_ckpt_path: the newest embedding ({step_e}) and head ({step_h}) "
                                 f"checkpoints are of different steps")
            self.files = [emb, head]
            load_part(self.holder, self.files, config)

    def generator(self, open_blocks: Callable[[], Any], use_past: bool = True) -> PanguGenerator:
        return PanguGenerator(self.config, self.backbone.embedding, self.backbone, self.head, open_blocks, use_past)


def follower_decoder(config: PanguAlphaConfig, ckpt_path: Optional[str] = None) -> Tuple[BlocksDecoder, List[str]]:
    """Party B's blocks (loaded from its newest checkpoint) ready for incremental decoding."""
    backbone = PanguAlphaBackbone(config, parts=("blocks",), init=ckpt_path is None)
    files: List[str] = []
    if ckpt_path is not None:
        file, _ = find_checkpoint(ckpt_path, PREFIXES["backbone"], (os.path.join("checkpoints", "follower"),
                                                                    "follower"))
        files = [file]
        load_part(_Holder(backbone), files, config)
    return BlocksDecoder(backbone.blocks, config), files


def central_generator(config: PanguAlphaConfig, ckpt_path: Optional[str], use_past: bool = True
                      ) -> Tuple[PanguGenerator, List[str]]:
    backbone = PanguAlphaBackbone(config, init=ckpt_path is None)
    files: List[str] = []
    if ckpt_path is not None:
        file, _ = find_checkpoint(ckpt_path, CENTRAL_PREFIX, ("centralized",))
        files = [file]
        load_part(_Holder(backbone), files, config)
    decoder = BlocksDecoder(backbone.blocks, config)
    gen = PanguGenerator(config, backbone.embedding, backbone, PanguAlphaHead(config),
                         lambda: BlocksSession(decoder), use_past)
    return gen, files


# ----------------------------------------------------------------------------------------------
# generation
# ----------------------------------------------------------------------------------------------
def generate_texts(generator: PanguGenerator, tokenizer: Any, prompts: Sequence[str], options: GenerateOptions,
                   label: str = "") -> List[Dict[str, Any]]:
    """Continue every prompt; logs `generated: <continuation>` per prompt and returns the results."""
    rng = np.random.default_rng(options.seed)
    results = []
    for prompt in prompts:
        ids = tokenizer.encode(prompt)
        t0 = time.perf_counter()
        try:
            new = generate_ids(generator, ids, options, generator.config.vocab_size, generator.config.seq_length, rng)
        finally:
            generator.close()
        seconds = time.perf_counter() - t0
        text = tokenizer.decode(new)
        logger.info("prompt: %s", one_line(prompt))
        logger.info("%sgenerated: %s", label, one_line(text))
        logger.info("(%d prompt tokens, %d generated in %.2f s)", len(ids), len(new), seconds)
        results.append({"prompt": prompt, "prompt_ids": ids, "ids": new, "text": text, "seconds": seconds})
    return results


def one_line(text: str) -> str:
    """Text for a log line: newlines shown as \\n (a continuation may contain several)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _tokenizer(args: argparse.Namespace, config: PanguAlphaConfig) -> Any:
    from .tokenizer import JIEBATokenizer  # pylint: disable=import-outside-toplevel
    if not args.vocab_model:
        raise ValueError("--run_type predict needs --vocab_model (the SentencePiece model of the training run) "
                         "to tokenise the prompts")
    tokenizer = JIEBATokenizer(args.vocab_model)
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"--vocab_model {args.vocab_model} has {tokenizer.vocab_size} pieces but the model's "
                         f"vocab_size is {config.vocab_size}: use the vocabulary the model was trained with")
    return tokenizer


def _config(args: argparse.Namespace) -> PanguAlphaConfig:
    from .utils import config_from_args  # pylint: disable=import-outside-toplevel
    return config_from_args(args, dropout_rate=0.0, batch_size=1)


def run_predict_central(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """train_centralized.py --run_type predict."""
    prompts, options, config = read_prompts(args), options_from_args(args), _config(args)
    tokenizer = _tokenizer(args, config)
    generator, files = central_generator(config, args.load_ckpt_path, options.use_past)
    logger.info("centralised generation with %s (use_past %s)", ", ".join(files), options.use_past)
    return generate_texts(generator, tokenizer, prompts, options)


def split_local_generator(config: PanguAlphaConfig, ckpt_path: Optional[str], use_past: bool = True,
                          max_sessions: int = 4, idle_timeout: float = 300.0,
                          transport: Optional[Callable[[Dict], Dict]] = None):
    """(generator, service, files): party A and party B's service in one process."""
    leader = LeaderModel(config, ckpt_path)
    decoder, b_files = follower_decoder(config, ckpt_path)
    service = InferenceService(PanguBlocksBackend(decoder), max_sessions, idle_timeout)
    client = InferenceClient.in_process(service, "leader", transport)
    return leader.generator(lambda: RemoteBlocks(client, config), use_past), service, leader.files + b_files


def run_predict_local(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """run_pangu_train_local.py --run_type predict: both parties in this process."""
    prompts, options, config = read_prompts(args), options_from_args(args), _config(args)
    tokenizer = _tokenizer(args, config)
    generator, service, files = split_local_generator(config, args.load_ckpt_path, options.use_past)
    logger.info("split generation, both parties in this process, with %s (use_past %s)", ", ".join(files),
                options.use_past)
    results = generate_texts(generator, tokenizer, prompts, options)
    logger.info("party B served %d requests; sessions open now: %d", service.requests, len(service.sessions))
    return results


def run_predict_leader(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Party A over the communicator: tokenises, embeds, runs the head and picks the tokens."""
    from .split_train import LEADER, make_communicator  # pylint: disable=import-outside-toplevel
    prompts, options, config = read_prompts(args), options_from_args(args), _config(args)
    tokenizer = _tokenizer(args, config)
    leader = LeaderModel(config, args.load_ckpt_path)
    channel = make_communicator(args, LEADER)
    try:
        client = InferenceClient(channel.send, channel.recv)
        logger.info("split generation with %s; party B at %s (use_past %s)", ", ".join(leader.files), channel.where,
                    options.use_past)
        try:
            results = generate_texts(leader.generator(lambda: RemoteBlocks(client, config), options.use_past),
                                     tokenizer, prompts, options)
        finally:
            _say_bye(client)
        logger.info("wire bytes A->B: %d", channel.bytes_sent)
        return results
    finally:
        channel.close()


def _say_bye(client: InferenceClient) -> None:
    """Tell party B this leader is done (it frees our sessions and, unless --serve_forever, stops)."""
    try:
        client.bye()
    except Exception as err:  # pylint: disable=broad-except
        logger.warning("could not say goodbye to party B: %s", err)


def run_predict_follower(args: argparse.Namespace) -> Dict[str, Any]:
    """Party B over the communicator: serves its blocks to the leader's sessions; never sees a token id."""
    from .split_train import FOLLOWER, LEADER, make_communicator  # pylint: disable=import-outside-toplevel
    config = _config(args)
    decoder, files = follower_decoder(config, args.load_ckpt_path)
    service = InferenceService(PanguBlocksBackend(decoder), args.max_sessions, args.session_idle_timeout)
    channel = make_communicator(args, FOLLOWER)
    try:
        logger.info("serving generation with %s to %s: %s, idle sessions closed after %g s", ", ".join(files),
                    channel.where, describe_capacity(config, decoder.layers, args.max_sessions),
                    args.session_idle_timeout)
        service.serve(channel.comm, [LEADER], until_bye=not args.serve_forever)
        logger.info("follower done: %d requests served, %d sessions open, received tensors: %s, wire bytes "
                    "B->A %d", service.requests, len(service.sessions), ", ".join(sorted(service.received_keys)),
                    channel.bytes_sent)
        return {"requests": service.requests, "sessions": len(service.sessions), "bytes_sent": channel.bytes_sent}
    finally:
        channel.close()


_RUNNERS = {"central": run_predict_central, "local": run_predict_local, "leader": run_predict_leader,
            "follower": run_predict_follower}


def run_predict(args: argparse.Namespace, layout: str) -> Any:
    """`--run_type predict` of the programs (layout: central, local, leader, follower): logging to
    stdout and --log_file, the execution context, then generation (or, for the follower, serving)."""
    from .split_train import add_log_file, set_context  # pylint: disable=import-outside-toplevel
    from .utils import setup_logging  # pylint: disable=import-outside-toplevel
    setup_logging()
    add_log_file(getattr(args, "log_file", None))
    if layout == "follower":
        for flag in ("prompt", "prompt_file"):  # (the data flags are dropped by the follower's parser)
            if getattr(args, flag, None):
                raise ValueError(f"--{flag} given to the follower: party B never sees text or token ids")
    set_context(args)
    return _RUNNERS[layout](args)

