"""PanGu-alpha's two parties and the programs that run them (local, leader, follower).

The two-party protocol itself -- step-tagged messages, handshake, ABORT, the global gradient-norm /
overflow / loss-scale decision, the channels -- is `mindspore_federated.protocol` (docs/protocol.md).
What is PanGu's is here: which sub-network each party holds, which tensors go into each message:

    A -> B  FORWARD         {embedding_table, attention_mask}        + loss scale
    B -> A  FORWARD_REPLY   {hidden_states}
    A -> B  BACKWARD        {output: {hidden_states: d(loss*s)/dh}}
    B -> A  BACKWARD_REPLY  {hidden_states: {embedding_table: g}}    + B's squared norm, overflow
    A -> B  DECISION        global norm, overflow, save-checkpoint flag

The word-table gradient (embedding lookup + tied head projection) is summed at A before anything
is squared, so A's squared norm plus B's is exactly the whole model's: split training computes what
`train_centralized.py` computes.
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
from mindspore import Tensor

from mindspore_federated import FLModel, FLYamlData
from mindspore_federated.communication.compression import configs_of
from mindspore_federated.privacy import EmbeddingDP
from mindspore_federated.trainer.data_parallel import (DataParallelHandler, RankGroup, RootRelayChannel,
                                                       launched_by_msrun)
from mindspore_federated.protocol import (CommunicatorChannel, FLModelFollower, FLModelLeader, FLModelRelay,
                                          FollowerLoop, GradientStats, LocalChannel, Message, PeerAborted,
                                          PeerSession, ProtocolError)

from .cli import stage_name
from .lr_schedule import default_warmup_steps, lr_at
from .pangu_alpha import count_parameters
from .pangu_alpha_config import PanguAlphaConfig
from .split_pangu_alpha import (BackboneLossNet, EmbeddingLossNet, HeadEvalNet, HeadLossNet, PanguAlphaAdam,
                                PerplexityMetric, config_fingerprint, stage_blocks, stage_fingerprint, yaml_path)
from .utils import LossLog, latest_checkpoint, progress, step_log_line
from .wire_modes import WIRE_MODES

logger = logging.getLogger(__name__)

__all__ = ["LeaderParty", "FollowerParty", "run_local", "run_leader", "run_follower", "schedule", "party_yaml",
           "stage_yaml", "WIRE_MODES"]

LEADER, FOLLOWER = "leader", "follower"
REMEDY = "stop both parties and restart both with --resume (each continues from its newest checkpoint)"
PIPELINE_REMEDY = ("stop every party (the leader and each follower stage) and restart all with --resume (each "
                   "continues from its newest checkpoint)")


# ----------------------------------------------------------------------------------------------
# compression of the exchanged tensors (yaml variants) and EmbeddingDP
# ----------------------------------------------------------------------------------------------
_REWRITE = {"fp16": {"compress_type": "fp16"}, "min_max8": {"compress_type": "min_max", "bit_num": 8}}


def _rewrite_min_max(raw: Any, setting: Mapping[str, Any]) -> Any:
    """Copy of a yaml dict with every min_max item replaced by `setting`."""
    if isinstance(raw, list):
        return [_rewrite_min_max(item, setting) for item in raw]
    if not isinstance(raw, Mapping):
        return raw
    out = {k: _rewrite_min_max(v, setting) for k, v in raw.items()}
    if out.get("compress_type") == "min_max":
        out.pop("bit_num", None)
        out.update(setting)
    return out


def party_yaml(name: str, compress: str = "none", embedding_dp: bool = False,
               embedding_dp_eps: Optional[float] = None, leader_layers: int = 0) -> FLYamlData:
    """The yaml of one sub-network (embedding, head, backbone) for a --compress / --embedding_dp /
    --leader_layers choice.

    With EmbeddingDP the embedding party loads yaml/embedding_dp.yaml whatever --compress says: its
    activations are 0/1 codes, which only lossless 1-bit bit_pack makes sense for (min_max on them
    is refused by FLModel); `embedding_dp_eps` (None = quantisation only) replaces the file's eps.
    With `leader_layers` > 0 the embedding's optimizer also updates A's transformer blocks (its
    `params` filters gain `backbone.blocks.`); tensor names and routing do not change.
    """
    data = _party_yaml(name, compress, embedding_dp, embedding_dp_eps)
    if name != "embedding" or not leader_layers:
        return data
    raw = dict(data.yaml_data)
    raw["opts"] = [dict(opt, params=list(opt.get("params") or []) + [{"name": "backbone.blocks."}])
                   if opt.get("params") else dict(opt) for opt in raw["opts"]]
    return FLYamlData.from_dict(raw)


def _party_yaml(name: str, compress: str, embedding_dp: bool, embedding_dp_eps: Optional[float]) -> FLYamlData:
    if compress not in WIRE_MODES:
        raise ValueError(f"--compress {compress!r}: choose one of {', '.join(WIRE_MODES)}")
    if embedding_dp and name == "embedding":
        raw = FLYamlData(yaml_path("embedding_dp")).yaml_data
        raw = dict(raw, privacy={"embedding_dp": {"eps": embedding_dp_eps}})
        return FLYamlData.from_dict(raw)
    if compress == "none":
        return FLYamlData(yaml_path(name))
    data = FLYamlData(yaml_path(f"{name}_compressed"))
    if compress == "min_max6":
        return data
    return FLYamlData.from_dict(_rewrite_min_max(data.yaml_data, _REWRITE[compress]))


def stage_yaml(compress: str, stages: int = 1, index: int = 0) -> FLYamlData:
    """Party B's yaml (yaml/backbone*.yaml) for pipeline stage `index` of `stages`.

    The names make each link read like the single-follower one: a stage with a stage after it sends
    it `hidden_states` and `attention_mask` and gets back `{hidden_states: {hidden_states: g}}`,
    its sens (tag `hidden_states`); a stage after another one takes `hidden_states` as its input
    (instead of A's `embedding_table`). The first stage's link to A is that of the single follower.
    """
    data = party_yaml("backbone", compress)
    if stages == 1:
        return data
    raw = copy.deepcopy(dict(data.yaml_data))
    first, last = index == 0, index == stages - 1

    def rename(items: List[Dict[str, Any]]) -> None:
        for item in items:
            if not first and item["name"] == "embedding_table":
                item["name"] = "hidden_states"

    for phase in ("train_net", "eval_net"):
        net = raw["model"][phase]
        rename(net["inputs"])
        if not last:   # the mask goes on as A sends it (bit_pack when compressed)
            embedding = party_yaml("embedding", compress).yaml_data["model"][phase]["outputs"]
            net["outputs"].append(dict(next(o for o in embedding if o["name"] == "attention_mask")))
    for term in [g for opt in raw["opts"] for g in opt["grads"]] + list(raw.get("grad_scalers") or []):
        rename(term["inputs"])
        if not last:
            term["sens"] = "hidden_states"
    return FLYamlData.from_dict(raw)


def describe_wire(configs: Mapping[str, Any]) -> str:
    """'embedding_table min_max/6, attention_mask bit_pack/1' (for the log)."""
    if not configs:
        return "uncompressed"
    return ", ".join(f"{k} {c.compress_type}/{c.bit_num}" for k, c in sorted(configs.items()))


def schedule(config: PanguAlphaConfig, total_steps: int, warmup_steps: Optional[int]) -> Tuple[int, int]:
    """(warmup, decay) exactly as train_centralized.build_training computes them."""
    warmup = default_warmup_steps(total_steps, config.warmup_steps) if warmup_steps is None else int(warmup_steps)
    return warmup, max(total_steps - warmup, 1)


def _batch_tensors(batch: Mapping[str, np.ndarray]) -> Dict[str, Tensor]:
    return {"input_ids": Tensor(np.asarray(batch["input_ids"], np.int32)),
            "position_id": Tensor(np.asarray(batch["position_id"], np.int32)),
            "attention_mask": Tensor(np.asarray(batch["attention_mask"], np.float32))}


# ----------------------------------------------------------------------------------------------
# party A
# ----------------------------------------------------------------------------------------------
class LeaderParty:
    """Party A: data, embedding and head (two FLModels); drives each step through its `session`.

    `pump` is called after every message A sends: in the one-process run it lets party B handle
    that message right away (`FollowerLoop.serve_one`); across processes it does nothing.
    """

    def __init__(self, config: PanguAlphaConfig, warmup: int, decay: int, channel: Any,
                 pump: Callable[[], Any] = lambda: None, compress: str = "none", embedding_dp: bool = False,
                 embedding_dp_eps: Optional[float] = None) -> None:
        self.config = config
        self.embedding_net = EmbeddingLossNet(config)
        self.head_net = HeadLossNet(config)
        emb_yaml = party_yaml("embedding", compress, embedding_dp, embedding_dp_eps, config.leader_layers)
        head_yaml = party_yaml("head", compress)
        self.embedding_opt = PanguAlphaAdam(self.embedding_net, emb_yaml, config, warmup, decay)
        self.head_opt = PanguAlphaAdam(self.head_net, head_yaml, config, warmup, decay)
        self.metric = PerplexityMetric()
        # --embedding_dp opts in explicitly: the yaml's privacy section only supplies eps
        self.embedding = FLModel(emb_yaml, self.embedding_net, optimizers=self.embedding_opt,
                                 embedding_dp=EmbeddingDP(emb_yaml.embedding_dp_eps) if embedding_dp else None)
        self.head = FLModel(head_yaml, self.head_net, optimizers=self.head_opt,
                            eval_network=HeadEvalNet(self.head_net), metrics=self.metric)
        self.set_train(True)
        self.last_overflow = False
        self.last_scale = 0.0
        self.wire_configs = configs_of(emb_yaml, head_yaml)
        self.session = PeerSession(channel, LEADER, FOLLOWER, lambda: self.global_step, pump, REMEDY)
        # the head's squared norm first, then the embedding's (the order of the float32 sum; norm_groups in
        # split_pangu_alpha.py gives train_centralized.py the same order)
        self.driver = FLModelLeader(self.session, self.embedding, self.head, [self.head_opt, self.embedding_opt])

    @property
    def channel(self) -> Any:
        return self.session.channel

    @channel.setter
    def channel(self, channel: Any) -> None:
        self.session.channel = channel

    @property
    def global_step(self) -> int:
        return self.embedding.global_step

    @property
    def models(self) -> Dict[str, FLModel]:
        return {"embedding": self.embedding, "head": self.head}

    def num_parameters(self) -> int:
        return count_parameters(self.embedding_net) + count_parameters(self.head_net)

    def set_train(self, mode: bool) -> None:
        self.embedding_net.set_train(mode)
        self.head_net.set_train(mode)

    def train_step(self, batch: Mapping[str, np.ndarray], save: bool = False) -> float:
        """Forward, backward and the agreed update of one batch; returns the loss.

        The current loss scale is the head's sensitivity and travels in FORWARD (B checks it)."""
        scale = np.asarray(self.head_opt.loss_scale_value(), np.float32)
        outputs, decision = self.driver.train_step(_batch_tensors(batch), self.global_step + 1,
                                                   sens={"loss_scale": {"output": Tensor(scale)}}, save=save,
                                                   loss_scale=scale)
        self.last_scale = float(scale)
        self.last_overflow = decision.overflow
        return float(outputs["output"].asnumpy())

    def evaluate(self, batches: Iterator[Tuple[int, Mapping[str, np.ndarray]]],
                 max_batches: Optional[int] = None) -> Tuple[float, float, int]:
        """Token-weighted eval loss and perplexity over `batches` (dropout off on both parties).

        With EmbeddingDP, FLModel replaces the activations B receives by their codes here too."""
        self.metric.clear()
        self.set_train(False)
        try:
            for i, (_, batch) in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                self.driver.eval_step(_batch_tensors(batch), i)
        finally:
            self.set_train(True)
        mean, ppl = self.metric.eval()
        return mean, ppl, self.metric.tokens

    def save(self, directory: str) -> List[str]:
        return [self.embedding.save_ckpt(directory), self.head.save_ckpt(directory)]

    def restore(self, directory: str) -> int:
        """Load the newest embedding and head checkpoints (they must be of the same step)."""
        files = {}
        for name, model in self.models.items():
            found = latest_checkpoint(directory, model.yaml_data.train_net.name)
            if found is None:
                raise FileNotFoundError(f"--resume: no {model.yaml_data.train_net.name}_step_N.ckpt in {directory}")
            files[name] = found
        steps = {name: step for name, (_, step) in files.items()}
        if len(set(steps.values())) != 1:
            raise ValueError(f"--resume: the newest checkpoints in {directory} are of different steps "
                             f"(embedding {steps['embedding']}, head {steps['head']})")
        for name, model in self.models.items():
            model.load_ckpt("train", files[name][0])
        return self.global_step


# ----------------------------------------------------------------------------------------------
# party B
# ----------------------------------------------------------------------------------------------
class FollowerParty(FLModelFollower):
    """Party B: the transformer blocks. Holds no data; its `loop` (a FollowerLoop) reacts to A's
    messages, and what it does with each follows from yaml/backbone.yaml (`FLModelFollower`).

    With `stages` > 1 it is pipeline stage `index`: it holds only its share of the blocks
    (`stage_blocks`), its upstream is A (stage 0) or the previous stage, and every stage but the
    last relays each message to the next one (`connect_downstream`, `FLModelRelay`).

    The optimizer (its LR schedule depends on the total number of steps, which only the data
    owner knows) is built after the handshake, by `build(warmup, decay)`.
    """

    def __init__(self, config: PanguAlphaConfig, channel: Any, checkpoint_dir: Optional[str] = None,
                 compress: str = "none", group: Optional[RankGroup] = None, stages: int = 1, index: int = 0) -> None:
        super().__init__(checkpoint_dir=checkpoint_dir)
        self.group = group  # an msrun job's RankGroup: this rank computes on its slice of each batch
        self.config = config
        self.stages, self.index, self.name = stages, index, stage_name(index)
        self.blocks = stage_blocks(config, stages, index)
        self.net = BackboneLossNet(config, self.blocks, pass_mask=index < stages - 1)
        self.net.set_train(True)
        self.yaml = stage_yaml(compress, stages, index)
        # from the yaml: the communicator is made before the handshake, the FLModel after it
        self.wire_configs = configs_of(self.yaml)
        self.opt: Optional[PanguAlphaAdam] = None
        self._start_step = 0
        self._resume_file: Optional[str] = None
        self.received_keys: set = set()
        self.session = PeerSession(channel, self.name, LEADER if index == 0 else stage_name(index - 1),
                                   lambda: self.global_step, remedy=REMEDY if stages == 1 else PIPELINE_REMEDY)
        self.downstream: Optional[PeerSession] = None
        self.loop: Optional[FollowerLoop] = None

    def connect_downstream(self, channel: Any, pump: Callable[[], Any] = lambda: None) -> PeerSession:
        """The session to the next stage (this one is its leader); call before `build`."""
        self.downstream = PeerSession(channel, self.name, stage_name(self.index + 1), lambda: self.global_step,
                                      pump, self.session.remedy)
        return self.downstream

    @property
    def channel(self) -> Any:
        return self.session.channel

    @channel.setter
    def channel(self, channel: Any) -> None:
        self.session.channel = channel

    @property
    def global_step(self) -> int:
        return self.model.global_step if self.model is not None else self._start_step

    def num_parameters(self) -> int:
        return count_parameters(self.net)

    def resume_step(self, directory: str) -> int:
        """Step of the newest backbone checkpoint in `directory` (0 if none): sent in the handshake."""
        found = latest_checkpoint(directory, self.yaml.train_net.name) if directory else None
        self._start_step = found[1] if found else 0
        self._resume_file = found[0] if found else None
        return self._start_step

    def build(self, warmup: int, decay: int) -> None:
        self.opt = PanguAlphaAdam(self.net, self.yaml, self.config, warmup, decay)
        self.model = FLModel(self.yaml, self.net, optimizers=self.opt)
        self.optimizers = [self.opt]
        if self._resume_file:
            self.model.load_ckpt("train", self._resume_file)
            if self.model.global_step != self._start_step:
                raise ValueError(f"{self._resume_file}: holds global_step {self.model.global_step}, "
                                 f"its name says {self._start_step}")
        handler: Any = self if self.group is None else DataParallelHandler(self, self.group)
        if self.downstream is not None:
            handler = FLModelRelay(handler, self.downstream)
        self.loop = FollowerLoop(self.session, handler, self.global_step)

    def serve_one(self, timeout: Optional[float] = None) -> bool:
        """Handle the next message from the leader; False when the leader says training is done."""
        return self.loop.serve_one(timeout)

    def _note_keys(self, msg: Message) -> None:
        def walk(node: Mapping, prefix: str) -> None:
            for key, value in node.items():
                if isinstance(value, Mapping):
                    walk(value, f"{prefix}{key}.")
                else:
                    self.received_keys.add(prefix + key)
        walk(msg.tensors(), "")

    # ---- FollowerHandler: FLModelFollower's, plus PanGu's checks
    def forward(self, msg: Message) -> Mapping[str, Any]:
        self._note_keys(msg)
        scale = msg.number("loss_scale")
        if scale != self.opt.loss_scale_value():
            raise self.session.fail(f"loss scale differs at step {msg.step}: leader {scale:g}, {self.name} "
                                    f"{self.opt.loss_scale_value():g} (checkpoints of different steps?) -- "
                                    f"{self.session.remedy}")
        return super().forward(msg)

    def backward(self, msg: Message, sens: Optional[Mapping[str, Any]] = None
                 ) -> Tuple[Mapping[str, Any], GradientStats]:
        self._note_keys(msg)
        return super().backward(msg, sens)

    def evaluate(self, msg: Message) -> Mapping[str, Any]:
        self._note_keys(msg)
        self.net.set_train(False)   # dropout off
        try:
            return super().evaluate(msg)
        finally:
            self.net.set_train(True)


# ----------------------------------------------------------------------------------------------
# the programs (run_pangu_train_local.py / _leader.py / _follower.py are thin wrappers)
# ----------------------------------------------------------------------------------------------
def make_communicator(args: argparse.Namespace, role: str,
                      compress_configs: Optional[Mapping[str, Any]] = None) -> CommunicatorChannel:
    """Launch this party's server and return the channel to the peer (names: leader / follower).

    `compress_configs`: {tensor: CompressConfig} of the tensors this party sends (from its yamls, `configs_of`).
    """
    peer = FOLLOWER if role == LEADER else LEADER
    comm = _launch(args, role, {peer: args.remote_server_address}, compress_configs)
    return CommunicatorChannel(comm, peer, args.step_timeout)


def _launch(args: argparse.Namespace, name: str, peers: Mapping[str, str],
            compress_configs: Optional[Mapping[str, Any]] = None) -> Any:
    """This party's launched communicator (server `name` on --http_server_address) to `peers` {name: address}."""
    from mindspore_federated import ServerConfig, SSLConfig, VerticalFederatedCommunicator  # pylint: disable=import-outside-toplevel
    ssl_config = None
    if args.enable_ssl:
        missing = [flag for flag in ("server_cert_path", "client_cert_path", "ca_cert_path")
                   if not getattr(args, flag)]
        if missing:
            raise ValueError(f"--enable_ssl needs {', '.join('--' + m for m in missing)}")
        ssl_config = SSLConfig(args.server_password, args.client_password, args.server_cert_path,
                               args.client_cert_path, args.ca_cert_path, crl_path=args.crl_path)
    comm = VerticalFederatedCommunicator(
        ServerConfig(name, args.http_server_address), [ServerConfig(n, a) for n, a in peers.items()],
        enable_ssl=bool(args.enable_ssl), ssl_config=ssl_config, compress_configs=compress_configs or None,
        connect_timeout=float(min(10.0, args.peer_timeout)), send_deadline=float(args.peer_timeout))
    comm.launch()
    return comm


def describe_time(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def lr_of(opt: PanguAlphaAdam, config: PanguAlphaConfig, warmup: int, decay: int) -> float:
    """Learning rate used by the last applied update (for the loss log)."""
    return lr_at(opt.applied_updates() - 1, config.start_lr, config.end_lr, warmup, decay)


def checkpoint_dirs(args: argparse.Namespace) -> Dict[str, str]:
    """{party name: its checkpoint folder}: leader, follower and the further pipeline stages' (follower2, ...)."""
    base = os.path.join(args.output_dir, "checkpoints")
    names = [LEADER] + [stage_name(i) for i in range(max(int(getattr(args, "pipeline_stages", 1)), 1))]
    return {name: os.path.join(base, name) for name in names}


def set_context(args: argparse.Namespace) -> None:
    """Same execution context as train_centralized.set_context."""
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    extra = {} if args.device_id is None else {"device_id": args.device_id}
    ms.set_context(mode=ms.GRAPH_MODE if args.exec_mode == "graph" else ms.PYNATIVE_MODE,
                   device_target=args.device_target, **extra)
    ms.set_seed(args.seed)
    np.random.seed(args.seed)


def add_log_file(path: Optional[str]) -> None:
    """Also send the log (plain lines, as on stdout) to `path`."""
    if not path:
        return
    root = logging.getLogger()
    full = os.path.abspath(path)
    if any(isinstance(h, logging.FileHandler) and h.baseFilename == full for h in root.handlers):
        return
    os.makedirs(os.path.dirname(full), exist_ok=True)
    handler = logging.FileHandler(full, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)


def _stopping(session: Optional[PeerSession], role: str, err: BaseException) -> None:
    """Tell the peer why this party stops (once; not if the peer stopped first or cannot be reached:
    waiting on a dead peer would only delay the report)."""
    if session is None or isinstance(err, (PeerAborted, ConnectionError)):
        return
    if isinstance(err, ProtocolError):
        session.report(err)
        return
    what = "was interrupted" if isinstance(err, (KeyboardInterrupt, SystemExit)) else "failed"
    session.abort(f"the {role} {what}: {type(err).__name__}: {err} -- {session.remedy}")


def _leader_side(args: argparse.Namespace, local: bool, measure: bool = False,
                 follower_tap: Optional[Callable[[Any], Any]] = None) -> Dict[str, Any]:
    """Party A's program; with `local` party B runs in the same process behind a LocalChannel.

    `follower_tap(channel) -> channel` may wrap party B's end of the channel (the privacy audit
    records there what B receives)."""
    from train_centralized import BatchSource, plan_steps  # pylint: disable=import-outside-toplevel
    from .utils import config_from_args  # pylint: disable=import-outside-toplevel

    set_context(args)
    config = config_from_args(args)
    source = BatchSource(args, config, train=True)
    total, num_epochs = plan_steps(args, source)
    warmup, decay = schedule(config, total, args.warmup_steps)
    dirs = checkpoint_dirs(args)
    leader_dir = args.load_ckpt_path if (args.resume and args.load_ckpt_path) else dirs[LEADER]

    compress = getattr(args, "compress", "none")
    embedding_dp = bool(getattr(args, "embedding_dp", False))
    eps = getattr(args, "embedding_dp_eps", None)
    if eps is not None and not embedding_dp:
        raise ValueError("--embedding_dp_eps needs --embedding_dp")
    follower: Optional[FollowerParty] = None
    stages: List[FollowerParty] = []
    channel: Any = None
    follower_channel: Any = None
    leader: Optional[LeaderParty] = None
    if local:
        wire = bool(getattr(args, "wire", False)) or compress != "none" or embedding_dp
        channel, follower_channel = LocalChannel.pair((LEADER, FOLLOWER), measure, wire=wire)
        if follower_tap is not None:
            follower_channel = follower_tap(follower_channel)
        stages = _local_stages(config, follower_channel, dirs, compress, measure, wire, args.pipeline_stages)
        follower = stages[0]
        pump: Callable[[], Any] = follower.serve_one
    else:
        pump = lambda: None  # noqa: E731
    try:
        leader = LeaderParty(config, warmup, decay, channel, pump, compress=compress, embedding_dp=embedding_dp,
                             embedding_dp_eps=eps)
        if local:
            channel.set_compress_configs(leader.wire_configs)
        else:
            channel = leader.channel = make_communicator(args, LEADER, leader.wire_configs)
        logger.info("wire: --compress %s%s; A sends %s", compress,
                    f", EmbeddingDP eps={eps}" if embedding_dp else "", describe_wire(leader.wire_configs))
        start = 0
        if args.resume:
            if latest_checkpoint(leader_dir, leader.embedding.yaml_data.train_net.name) is None:
                logger.info("--resume: no leader checkpoint in %s, starting at step 0", leader_dir)
            else:
                start = leader.restore(leader_dir)
                logger.info("leader resumed at step %d from %s", start, leader_dir)
        logger.info("split PanGu-alpha %s: party A %d parameters (embedding%s + head), vocab %d, seq %d, batch %d, "
                    "%d steps (%d per epoch), warmup %d, lr %g -> %g, loss scale %g, mode %s, %s",
                    args.mode, leader.num_parameters(),
                    f" + {config.leader_layers} of {config.num_blocks} blocks" if config.leader_layers else "",
                    config.vocab_size, config.seq_length, config.batch_size,
                    total, source.steps_per_epoch, warmup, config.start_lr, config.end_lr,
                    leader.head_opt.loss_scale_value(), args.exec_mode,
                    ("both parties" if len(stages) < 2 else f"A and {len(stages)} stages of B") + " in this process"
                    if local else f"peer {channel.where}")
        settings = config_fingerprint(config)
        hello = dict(total_steps=np.asarray(total, np.int64), warmup=np.asarray(warmup, np.int64),
                     decay=np.asarray(decay, np.int64))
        if local:
            leader.session.hello(settings, compress, **hello)
            follower_settings = config_fingerprint(config, unknown=("vocab_size", "eod_id"))
            for i, stage in enumerate(stages):
                if args.resume:
                    stage.resume_step(dirs[stage.name])
                if i == 0:
                    stage.session.handshake(follower_settings, compress)
                    continue
                link = stage_fingerprint(config, len(stages), i)
                stages[i - 1].downstream.hello(link, compress, **hello)
                stage.session.handshake(link, compress)
                stages[i - 1].downstream.check_hello(stages[i - 1].downstream.receive_raw(), link, compress)
            for stage in stages:
                stage.build(warmup, decay)
                logger.info("party B%s: %d parameters (transformer blocks %d..%d)",
                            f" stage {stage.index} ({stage.name})" if len(stages) > 1 else "",
                            stage.num_parameters(), stage.blocks[0], stage.blocks[1] - 1)
            leader.session.check_hello(leader.session.receive_raw(), settings, compress)
        else:
            logger.info("waiting for the follower (handshake, up to %g s)", args.peer_timeout)
            leader.session.handshake(settings, compress, args.peer_timeout, **hello)
            logger.info("handshake with the follower done: same settings, both at step %d", start)

        loss_log = LossLog(args.loss_log)
        if start:
            loss_log.load_existing(start)
        losses: List[float] = []
        saved: List[str] = []
        step, epoch = start, 1
        wire_bytes: List[Tuple[int, int]] = []   # per step: (bytes A sent, bytes B sent or -1)
        t0 = time.time()
        for epoch, batch in source.iterate(start, num_epochs):
            if step >= total:
                break
            next_step = step + 1
            save = bool(args.save_ckpt_steps) and (next_step % args.save_ckpt_steps == 0 or next_step == total)
            sent_a = getattr(channel, "bytes_sent", 0)
            sent_b = getattr(follower_channel, "bytes_sent", 0)
            loss = leader.train_step(batch, save=save)
            step = leader.global_step
            losses.append(loss)
            a_bytes = getattr(channel, "bytes_sent", 0) - sent_a
            b_bytes = getattr(follower_channel, "bytes_sent", 0) - sent_b if follower_channel is not None else -1
            wire_bytes.append((a_bytes, b_bytes))
            record = {"step": step, "epoch": epoch, "loss": loss, "loss_scale": leader.last_scale,
                      "overflow": int(leader.last_overflow), "elapsed_s": round(time.time() - t0, 4),
                      "bytes_a_to_b": a_bytes}
            if b_bytes >= 0:
                record["bytes_b_to_a"] = b_bytes
            if not leader.last_overflow:
                record["lr"] = lr_of(leader.head_opt, config, warmup, decay)
            else:
                logger.info("step %d: gradient overflow on the parties, update skipped, loss scale -> %g",
                            step, leader.head_opt.loss_scale_value())
            loss_log.add(**record)
            if step % max(args.log_steps, 1) == 0 or step == total:
                logger.info(step_log_line(epoch, step, total, loss))
                if a_bytes:
                    logger.info("step %d wire bytes: A->B %d%s", step, a_bytes,
                                f", B->A {b_bytes}" if b_bytes >= 0 else "")
            if save:
                saved.extend(leader.save(leader_dir))
        elapsed = time.time() - t0
        loss_log.write()
        trained = step - start
        logger.info("trained %d steps in %s (%.2f steps/s)", trained, describe_time(elapsed),
                    trained / max(elapsed, 1e-9))
        result: Dict[str, Any] = {"losses": losses, "final_step": step, "checkpoints": saved, "config": config,
                                  "steps_per_second": trained / max(elapsed, 1e-9), "leader": leader,
                                  "follower": follower, "stages": stages, "channel": channel,
                                  "follower_channel": follower_channel,
                                  "wire_bytes": wire_bytes}
        if wire_bytes and wire_bytes[-1][0]:
            logger.info("wire bytes per training step (mean): A->B %.0f%s", np.mean([a for a, _ in wire_bytes]),
                        f", B->A {np.mean([b for _, b in wire_bytes]):.0f}" if wire_bytes[-1][1] >= 0 else "")
        if (args.eval_data_url or args.synthetic) and args.eval_steps != 0:
            eval_source = BatchSource(args, config, train=False)
            count = eval_source.steps_per_epoch if args.eval_steps is None else min(args.eval_steps,
                                                                                    eval_source.steps_per_epoch)
            batches = progress(eval_source.iterate(0, 1), count, "evaluation")
            mean, ppl, tokens = leader.evaluate(batches, args.eval_steps)
            logger.info("eval loss: %.6f perplexity: %.4f (%d tokens)", mean, ppl, tokens)
            result.update(eval_loss=mean, perplexity=ppl)
        leader.session.finish()
        return result
    except BaseException as err:
        _stopping(leader.session if leader is not None else None, LEADER, err)
        raise
    finally:
        if not local and channel is not None:
            channel.close()


def _local_stages(config: PanguAlphaConfig, channel: Any, dirs: Mapping[str, str], compress: str, measure: bool,
                  wire: bool, count: int) -> List[FollowerParty]:
    """Party B in this process: one FollowerParty on `channel`, or `count` pipeline stages, each
    relaying to the next through its own LocalChannel pair (its pump serves the next stage)."""
    stages = [FollowerParty(config, channel, dirs[stage_name(0)], compress, stages=count, index=0)]
    channel.set_compress_configs(stages[0].wire_configs)
    for i in range(1, count):
        up_end, down_end = LocalChannel.pair((stage_name(i - 1), stage_name(i)), measure, wire=wire)
        stage = FollowerParty(config, down_end, dirs[stage_name(i)], compress, stages=count, index=i)
        down_end.set_compress_configs(stage.wire_configs)
        up_end.set_compress_configs(stages[-1].wire_configs)
        stages[-1].connect_downstream(up_end, stage.serve_one)
        stages.append(stage)
    return stages


def run_local(args: argparse.Namespace, measure: bool = False,
              follower_tap: Optional[Callable[[Any], Any]] = None) -> Dict[str, Any]:
    """Both parties in one process (tensors passed in memory); returns losses, parties, metrics.
    `follower_tap`: see `_leader_side`."""
    from .utils import setup_logging  # pylint: disable=import-outside-toplevel
    setup_logging()
    add_log_file(args.log_file)
    return _leader_side(args, local=True, measure=measure, follower_tap=follower_tap)


def run_leader(args: argparse.Namespace) -> Dict[str, Any]:
    """Party A as its own process, talking to the follower over the communicator."""
    from .utils import setup_logging  # pylint: disable=import-outside-toplevel
    setup_logging()
    add_log_file(args.log_file)
    return _leader_side(args, local=False)


def run_follower(args: argparse.Namespace) -> Dict[str, Any]:
    """Party B as its own process: no data, only activations and gradients from the leader.

    Under msrun it is a data-parallel job (`mindspore_federated.trainer.data_parallel`): every
    worker computes on its slice of the leader's batch, rank 0 talks to the leader for all.
    With --pipeline_stages N it is stage --stage_index of N: its upstream is the leader (stage 0)
    or the previous stage (at --remote_server_address), every stage but the last relays to the next
    one at --next_stage_address."""
    from .utils import config_from_args, setup_logging  # pylint: disable=import-outside-toplevel
    setup_logging()
    set_context(args)
    # first: under msrun this process may be the scheduler, which stops in there
    group = RankGroup() if launched_by_msrun() else None
    root = group is None or group.is_root
    if root:
        add_log_file(args.log_file)  # the other ranks log to msrun's worker_<rank>.log
    config = config_from_args(args)
    stages, index = int(args.pipeline_stages), int(args.stage_index)
    stage_blocks(config, stages, index)  # the flags' errors first
    if group is not None:
        if stages > 1:
            raise ValueError("--pipeline_stages with msrun: a pipeline stage runs as one process (not supported yet)")
        if config.batch_size % group.size:
            raise ValueError(f"batch size {config.batch_size} cannot be split over {group.size} msrun workers: "
                             f"use a batch size divisible by --worker_num")
        logger.info("follower rank %d of %d: %d of the leader's %d samples per step%s", group.rank, group.size,
                    config.batch_size // group.size, config.batch_size, ", talks to the leader" if root else "")
    if index < stages - 1 and not args.next_stage_address:
        raise ValueError(f"--stage_index {index} of --pipeline_stages {stages} needs --next_stage_address (ip:port "
                         f"of stage {index + 1}); only the last stage has none")
    if index == stages - 1 and args.next_stage_address:
        logger.warning("--next_stage_address %s is not used: stage %d is the last of --pipeline_stages %d",
                       args.next_stage_address, index, stages)
    if index == 0:
        unknown = ("eod_id",) + (() if args.vocab_size else ("vocab_size",))
        settings = config_fingerprint(config, unknown=unknown)
    else:
        settings = stage_fingerprint(config, stages, index)
    name = stage_name(index)
    directory = args.load_ckpt_path if (args.resume and args.load_ckpt_path) else checkpoint_dirs(args)[name]
    compress = getattr(args, "compress", "none")
    # every rank reads a --resume checkpoint; rank 0 alone writes them (the ranks' weights are equal)
    follower = FollowerParty(config, None, directory if root else None, compress=compress, group=group,
                             stages=stages, index=index)
    upstream = follower.session.peer_role
    peers = {upstream: args.remote_server_address}
    if index < stages - 1:
        peers[stage_name(index + 1)] = args.next_stage_address
    comm = _launch(args, name, peers, follower.wire_configs) if root else None
    to_upstream = CommunicatorChannel(comm, upstream, args.step_timeout) if root else None
    channel = follower.channel = RootRelayChannel(to_upstream, group) if group is not None else to_upstream
    if index < stages - 1:
        follower.connect_downstream(CommunicatorChannel(comm, stage_name(index + 1), args.step_timeout))
    logger.info("wire: --compress %s; B sends %s", compress, describe_wire(follower.wire_configs))
    what = "party B" if stages == 1 else f"party B stage {index} of {stages} ({name})"
    try:
        if args.resume:
            start = follower.resume_step(directory)
            logger.info("%s resumes at step %d (%s)", name, start, directory)
        logger.info("split PanGu-alpha %s: %s %d parameters (transformer blocks %d..%d), waiting for the "
                    "%s at %s (handshake, up to %g s)", args.mode, what, follower.num_parameters(),
                    follower.blocks[0], follower.blocks[1] - 1, upstream, args.remote_server_address,
                    args.peer_timeout)
        hello = follower.session.handshake(settings, compress, args.peer_timeout)
        total, warmup, decay = (hello.integer(k) for k in ("total_steps", "warmup", "decay"))
        if follower.downstream is not None:
            logger.info("waiting for the next stage, %s at %s (handshake, up to %g s)", follower.downstream.peer_role,
                        args.next_stage_address, args.peer_timeout)
            try:
                follower.downstream.handshake(stage_fingerprint(config, stages, index + 1), compress,
                                              args.peer_timeout,
                                              **{k: hello.array(k) for k in ("total_steps", "warmup", "decay")})
            except (PeerAborted, ProtocolError, ConnectionError, TimeoutError) as err:
                # the upstream is told (as ProtocolError), and which link failed
                raise ProtocolError(f"between the {name} and the {follower.downstream.peer_role}: {err}") from err
        follower.build(warmup, decay)
        logger.info("handshake with the %s done: %d steps, warmup %d, starting at step %d", upstream, total,
                    warmup, follower.global_step)
        t0 = time.time()
        start = follower.global_step
        bytes_per_step: List[int] = []
        mark = [channel.bytes_sent]
        sent = "B->A" if stages == 1 else f"sent by {name}"

        def on_step(step: int) -> None:
            bytes_per_step.append(channel.bytes_sent - mark[0])
            mark[0] = channel.bytes_sent
            if step % max(args.log_steps, 1) == 0 or step == total:
                logger.info("%s step %d/%d, wire bytes %s %d", name, step, total, sent, bytes_per_step[-1])

        follower.loop.run(on_step=on_step)
        elapsed = time.time() - t0
        logger.info("%s done at step %d (%d steps in %s)", name, follower.global_step,
                    follower.global_step - start, describe_time(elapsed))
        if bytes_per_step:
            logger.info("%s wire bytes per training step (mean): %s %.0f", name, sent, np.mean(bytes_per_step))
        return {"final_step": follower.global_step, "checkpoints": follower.saved,
                "received_keys": sorted(follower.received_keys), "follower": follower,
                "bytes_per_step": bytes_per_step}
    except BaseException as err:
        _stopping(follower.session, name, err)
        if follower.downstream is not None:   # (a no-op if the loop told it already)
            follower.downstream.abort(follower.downstream.why_stopped(err))
        raise
    finally:
        channel.close()
