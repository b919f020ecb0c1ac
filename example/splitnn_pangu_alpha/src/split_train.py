"""The split-training loop shared by the local, leader and follower programs.

One code path, two channels: the parties exchange the same messages whether they live in one
process (`LocalChannel`, tensors handed over in memory) or in two (`CommChannel` over the
`VerticalFederatedCommunicator`, gRPC + mutual TLS). Per training step (SPEC §3.1, plus the few
scalars that keep clipping and loss scaling global):

    A -> B  FWD       {embedding_table, attention_mask}        + step, loss scale
    B -> A  HIDDEN    {hidden_states}                          + step
    A -> B  GRAD      {output: {hidden_states: d(loss*s)/dh}}  + step
    B -> A  EMB_GRAD  {hidden_states: {embedding_table: g}}    + step, B's squared norm, overflow
    A -> B  DECISION  global norm, overflow, save-checkpoint flag + step

The word-table gradient (embedding lookup + tied head projection) is summed at A before anything
is squared, so A's squared norm plus B's is exactly the whole model's. Both parties then clip with
the same norm, skip the same overflowed steps and keep the same loss scale, which makes split
training compute what `train_centralized.py` computes.

Every message carries `meta.kind` and `meta.step`; a party that receives anything else than the
message it expects (a peer that restarted and sent a handshake, a step from another point of
the run) stops with an error that names both steps, and tells the peer why (ABORT).
"""
from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
from mindspore import Tensor

from mindspore_federated import FLModel, FLYamlData
from mindspore_federated.communication.compression import configs_of
from mindspore_federated.privacy import EmbeddingDP

from .lr_schedule import default_warmup_steps, lr_at
from .pangu_alpha import count_parameters
from .pangu_alpha_config import PanguAlphaConfig
from .split_pangu_alpha import (BackboneLossNet, EmbeddingLossNet, HeadEvalNet, HeadLossNet, PanguAlphaAdam,
                                PerplexityMetric, config_fingerprint, describe_fingerprint_mismatch, yaml_path)
from .utils import LossLog, latest_checkpoint, step_log_line

logger = logging.getLogger(__name__)

__all__ = ["Kind", "ProtocolError", "PeerAborted", "LocalChannel", "CommChannel", "LeaderParty",
           "FollowerParty", "add_split_args", "split_defaults", "schedule", "message_bytes", "WIRE_MODES",
           "party_yaml"]

LEADER, FOLLOWER = "leader", "follower"
ROLE_CODES = {LEADER: 1, FOLLOWER: 2}
ROLE_NAMES = {v: k for k, v in ROLE_CODES.items()}


class Kind:
    """Message kinds (meta.kind)."""
    HELLO, FWD, HIDDEN, GRAD, EMB_GRAD, DECISION, EVAL, EVAL_HIDDEN, DONE, ABORT = range(1, 11)
    NAMES = {1: "HELLO", 2: "FWD", 3: "HIDDEN", 4: "GRAD", 5: "EMB_GRAD", 6: "DECISION", 7: "EVAL",
             8: "EVAL_HIDDEN", 9: "DONE", 10: "ABORT"}


class ProtocolError(RuntimeError):
    """The peer is not where this party is in the run (restart, mismatched settings)."""


class PeerAborted(RuntimeError):
    """The peer stopped and said why."""


# ----------------------------------------------------------------------------------------------
# messages
# ----------------------------------------------------------------------------------------------
def _num(value: Any) -> Any:
    """A received scalar (numpy or mindspore) as a Python number."""
    if isinstance(value, Tensor):
        value = value.asnumpy()
    arr = np.asarray(value)
    return arr.reshape(-1)[0].item() if arr.size else None


def _array(value: Any) -> np.ndarray:
    return np.asarray(value.asnumpy() if isinstance(value, Tensor) else value)


def make_message(kind: int, step: int, tensors: Optional[Mapping[str, Any]] = None, **scalars: Any) -> Dict:
    """{'meta': {kind, step, **scalars}, **tensors}; scalars become 0-d numpy arrays."""
    meta: Dict[str, Any] = {"kind": np.asarray(kind, np.int32), "step": np.asarray(step, np.int64)}
    for key, value in scalars.items():
        meta[key] = value if isinstance(value, np.ndarray) and value.ndim else np.asarray(value)
    msg: Dict[str, Any] = {"meta": meta}
    if tensors:
        msg.update(tensors)
    return msg


def kind_of(msg: Mapping) -> int:
    try:
        return int(_num(msg["meta"]["kind"]))
    except (KeyError, TypeError, ValueError):
        raise ProtocolError(f"malformed message from the peer: no meta.kind (keys: {list(msg)})") from None


def step_of(msg: Mapping) -> int:
    return int(_num(msg["meta"]["step"]))


def _text(msg: Mapping) -> str:
    return _text_array_value(msg["meta"].get("text"), "")


def _text_array_value(raw: Any, default: str = "none") -> str:
    """A string sent as a uint8 array (absent: `default`)."""
    if raw is None:
        return default
    return bytes(_array(raw).astype(np.uint8).reshape(-1).tolist()).decode("utf-8", "replace")


def message_bytes(msg: Mapping, compress_configs: Optional[Mapping] = None) -> int:
    """Size of the message as the codec puts it on the wire (protobuf payload), without building it."""
    from mindspore_federated.communication import codec  # pylint: disable=import-outside-toplevel
    return sum(len(segment) for segment in codec.dumps_segments(msg, compress_configs))


# ----------------------------------------------------------------------------------------------
# compression of the exchanged tensors (yaml variants) and EmbeddingDP
# ----------------------------------------------------------------------------------------------
# --compress: which yaml the parties load. min_max6 is yaml/*_compressed.yaml as written; fp16 and
# min_max8 rewrite its min_max items (the 1-bit bit_pack of the attention mask is kept).
WIRE_MODES = ("none", "fp16", "min_max8", "min_max6")
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
               embedding_dp_eps: Optional[float] = None) -> FLYamlData:
    """The yaml of one sub-network (embedding, head, backbone) for a --compress / --embedding_dp choice.

    With EmbeddingDP the embedding party loads yaml/embedding_dp.yaml whatever --compress says: its
    activations are 0/1 codes, which only lossless 1-bit bit_pack makes sense for (min_max on them
    is refused by FLModel); `embedding_dp_eps` (None = quantisation only) replaces the file's eps.
    """
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


def describe_wire(configs: Mapping[str, Any]) -> str:
    """'embedding_table min_max/6, attention_mask bit_pack/1' (for the log)."""
    if not configs:
        return "uncompressed"
    return ", ".join(f"{k} {c.compress_type}/{c.bit_num}" for k, c in sorted(configs.items()))


def _text_array(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), np.uint8).copy()


# bit_pack of a non-finite or out-of-range tensor falls back to raw bytes, but min_max (NaN/Inf)
# and fp16/bf16 (finite values beyond the half range) raise. A gradient like that only occurs on
# an overflowed step, which the parties skip anyway, so it is sent as zeros with the overflow flag.
_HALF_LIMIT = {"fp16": 65504.0, "bf16": 3.3895313892515355e38}


def wire_safe_gradient(grad: Any, config: Any) -> Tuple[Any, bool]:
    """(tensor to send, overflow) for a gradient that a lossy compressor could not encode."""
    if config is None or config.compress_type not in ("min_max", "fp16", "bf16"):
        return grad, False
    array = _array(grad)
    if array.size == 0:
        return grad, False
    finite = bool(np.isfinite(array).all())
    if finite and config.compress_type in _HALF_LIMIT:
        finite = float(np.max(np.abs(array))) <= _HALF_LIMIT[config.compress_type]
    if finite:
        return grad, False
    logger.info("a gradient for the peer is not representable under %s (overflow): sent as zeros, "
                "the step is skipped", config.compress_type)
    return Tensor(np.zeros(array.shape, array.dtype)), True


# ----------------------------------------------------------------------------------------------
# channels
# ----------------------------------------------------------------------------------------------
class LocalChannel:
    """One end of an in-memory duplex channel: both parties in one process.

    By default tensors are handed over as they are (not copied). `measure=True` also records the
    bytes each message would take on the wire (benchmarks). `wire=True` sends every message through
    the codec -- encoded with this end's `compress_configs`, decoded for the peer -- so the one-process
    run sees exactly what the communicator would deliver (compression error included), counts the
    real bytes and times encode/decode (`codec_seconds`).
    """

    def __init__(self, inbox: Deque, outbox: Deque, name: str, measure: bool = False, wire: bool = False,
                 compress_configs: Optional[Mapping[str, Any]] = None) -> None:
        self._inbox, self._outbox, self.name = inbox, outbox, name
        self.wire = wire
        self.measure = measure or wire
        self.compress_configs: Dict[str, Any] = dict(compress_configs or {})
        self.bytes_sent = 0
        self.messages_sent = 0
        self.codec_seconds = 0.0
        self.sent_log: List[Tuple[int, int]] = []  # (kind, bytes) when measuring

    @staticmethod
    def pair(measure: bool = False, wire: bool = False) -> Tuple["LocalChannel", "LocalChannel"]:
        a_to_b: Deque = deque()
        b_to_a: Deque = deque()
        return (LocalChannel(b_to_a, a_to_b, LEADER, measure, wire),
                LocalChannel(a_to_b, b_to_a, FOLLOWER, measure, wire))

    def set_compress_configs(self, configs: Mapping[str, Any]) -> None:
        self.compress_configs = dict(configs)

    def send(self, msg: Dict) -> None:
        if self.wire:
            from mindspore_federated.communication import codec  # pylint: disable=import-outside-toplevel
            t0 = time.perf_counter()
            data = codec.dumps(msg, self.compress_configs or None)
            delivered = codec.loads(data)
            self.codec_seconds += time.perf_counter() - t0
            size = len(data)
        else:
            delivered = msg
            size = message_bytes(msg, self.compress_configs or None) if self.measure else 0
        if self.measure:
            self.bytes_sent += size
            self.sent_log.append((kind_of(msg), size))
        self.messages_sent += 1
        self._outbox.append(delivered)

    def recv(self, timeout: Optional[float] = None) -> Dict:  # pylint: disable=unused-argument
        if not self._inbox:
            raise RuntimeError(f"local channel ({self.name}): nothing to receive -- the in-process "
                               f"parties were driven out of order")
        return self._inbox.popleft()

    def try_send(self, msg: Dict, timeout: float = 5.0) -> None:  # pylint: disable=unused-argument
        self.send(msg)

    def close(self) -> None:
        pass


class CommChannel:
    """The channel to the peer over VerticalFederatedCommunicator (two processes / two servers).

    `bytes_sent` is the communicator's count: the protobuf payload of every acknowledged message.
    """

    def __init__(self, communicator: Any, peer: str, recv_timeout: float) -> None:
        self.comm = communicator
        self.peer = peer
        self.recv_timeout = recv_timeout
        self.messages_sent = 0
        address = communicator.remote_server_configs[peer].server_address
        self.where = f"{peer} at {address}"

    @property
    def bytes_sent(self) -> int:
        return self.comm.bytes_sent

    def send(self, msg: Dict) -> None:
        try:
            self.comm.send_tensors(self.peer, msg)
        except (TimeoutError, ConnectionError, OSError) as err:
            raise ConnectionError(f"cannot reach the {self.where}: {err} (is it running and listening, "
                                  f"are the addresses/certificates right?)") from err
        self.messages_sent += 1

    def recv(self, timeout: Optional[float] = None) -> Dict:
        wait = self.recv_timeout if timeout is None else timeout
        try:
            return self.comm.receive(self.peer, timeout=wait)
        except TimeoutError as err:
            raise TimeoutError(f"no message from the {self.where} within {wait:g} s: {err}") from err

    def try_send(self, msg: Dict, timeout: float = 5.0) -> None:
        """Best effort (used for ABORT): never blocks longer than `timeout`."""
        worker = threading.Thread(target=self._quiet_send, args=(msg,), daemon=True)
        worker.start()
        worker.join(timeout)

    def _quiet_send(self, msg: Dict) -> None:
        try:
            self.comm.send_tensors(self.peer, msg)
        except Exception:  # pylint: disable=broad-except
            pass

    def close(self) -> None:
        self.comm.close()


# ----------------------------------------------------------------------------------------------
# shared pieces
# ----------------------------------------------------------------------------------------------
def schedule(config: PanguAlphaConfig, total_steps: int, warmup_steps: Optional[int]) -> Tuple[int, int]:
    """(warmup, decay) exactly as train_centralized.build_training computes them."""
    warmup = default_warmup_steps(total_steps, config.warmup_steps) if warmup_steps is None else int(warmup_steps)
    return warmup, max(total_steps - warmup, 1)


class _Party:
    """Message checks shared by both parties."""

    role = ""
    peer_role = ""

    def __init__(self, channel: Any, compress: str = "none") -> None:
        self.channel = channel
        # the --compress choice: part of the startup handshake, both parties must load the same
        # yaml variant (a compressed tensor decodes at any receiver, but a party that expects
        # uncompressed gradients would train with a different model of the run)
        self.compress = compress

    @property
    def global_step(self) -> int:
        raise NotImplementedError

    def _expect(self, msg: Mapping, kind: int, step: Optional[int]) -> Mapping:
        got = kind_of(msg)
        if got == Kind.ABORT:
            raise PeerAborted(f"the {self.peer_role} stopped: {_text(msg)}")
        peer_step = step_of(msg) if "step" in msg["meta"] else -1
        if got == Kind.HELLO:
            error = (f"the {self.peer_role} restarted: it sent a startup handshake at step {peer_step} while "
                     f"this {self.role} is in step {self.global_step + 1} (steps completed: {self.global_step}). "
                     f"Stop both and restart both with --resume (both need a checkpoint of the same step)")
            self.abort(error)
            raise ProtocolError(error)
        if got != kind or (step is not None and peer_step != step):
            error = (f"out of step with the {self.peer_role}: expected {Kind.NAMES.get(kind)} of step {step}, "
                     f"got {Kind.NAMES.get(got, got)} of step {peer_step} (this {self.role} has completed "
                     f"{self.global_step} steps)")
            self.abort(error)
            raise ProtocolError(error)
        return msg

    def abort(self, reason: str) -> None:
        """Tell the peer why we stop (best effort, bounded wait)."""
        data = np.frombuffer(reason.encode("utf-8")[:4000], np.uint8).copy()
        try:
            self.channel.try_send(make_message(Kind.ABORT, self.global_step, text=data))
        except Exception:  # pylint: disable=broad-except
            pass

    # ---- startup handshake
    def send_hello(self, fingerprint: np.ndarray, **extra: Any) -> None:
        self.channel.send(make_message(Kind.HELLO, self.global_step, role=ROLE_CODES[self.role],
                                       fingerprint=fingerprint, compress=_text_array(self.compress), **extra))

    def check_hello(self, msg: Mapping, fingerprint: np.ndarray) -> Mapping:
        """Validate the peer's handshake: role, config fingerprint, global step."""
        kind = kind_of(msg)
        if kind == Kind.ABORT:
            raise PeerAborted(f"the {self.peer_role} refused to start: {_text(msg)}")
        if kind != Kind.HELLO:
            peer_step = step_of(msg)
            error = (f"expected the {self.peer_role}'s startup handshake but got {Kind.NAMES.get(kind, kind)} of "
                     f"step {peer_step}: the {self.peer_role} is mid-run (at step {peer_step}) while this "
                     f"{self.role} starts at step {self.global_step}. Stop both and restart both with --resume")
            self.abort(error)
            raise ProtocolError(error)
        meta = msg["meta"]
        peer_role = ROLE_NAMES.get(int(_num(meta["role"])), "?")
        errors = []
        if peer_role != self.peer_role:
            errors.append(f"the peer is a {peer_role}, expected a {self.peer_role} (both started as {self.role}?)")
        mismatch = describe_fingerprint_mismatch(fingerprint, _array(meta["fingerprint"]))
        if mismatch:
            errors.append(f"model/optimizer settings differ between the parties: {mismatch}")
        peer_compress = _text_array_value(meta.get("compress"))
        if peer_compress != self.compress:
            errors.append(f"wire compression differs between the parties: --compress ours {self.compress}, "
                          f"peer {peer_compress} (start both with the same --compress)")
        peer_step = step_of(msg)
        if peer_step != self.global_step:
            errors.append(f"the {self.role} starts at step {self.global_step} but the {self.peer_role} at step "
                          f"{peer_step} (resume both from the same checkpoint step, or neither)")
        if errors:
            error = "startup handshake failed: " + "; ".join(errors)
            self.abort(error)
            raise ProtocolError(error)
        return meta


def _scale_tensor(opt: PanguAlphaAdam) -> Tensor:
    return Tensor(np.asarray(opt.loss_scale_value(), np.float32))


# ----------------------------------------------------------------------------------------------
# party A
# ----------------------------------------------------------------------------------------------
class LeaderParty(_Party):
    """Party A: data, embedding and head, two FLModels; drives the step and makes the decisions.

    `pump` is called after every message A sends: in the one-process run it lets party B handle
    that message right away (`FollowerParty.serve_one`); across processes it does nothing.
    """

    role, peer_role = LEADER, FOLLOWER

    def __init__(self, config: PanguAlphaConfig, warmup: int, decay: int, channel: Any,
                 pump: Callable[[], Any] = lambda: None, compress: str = "none", embedding_dp: bool = False,
                 embedding_dp_eps: Optional[float] = None) -> None:
        super().__init__(channel, compress)
        self.config = config
        self.pump = pump
        self.embedding_net = EmbeddingLossNet(config)
        self.head_net = HeadLossNet(config)
        emb_yaml = party_yaml("embedding", compress, embedding_dp, embedding_dp_eps)
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

    # ---- one training step
    def train_step(self, batch: Mapping[str, np.ndarray], save: bool = False) -> float:
        """Forward, backward and the agreed update of one batch; returns the loss."""
        step = self.global_step + 1
        data = {"input_ids": Tensor(np.asarray(batch["input_ids"], np.int32)),
                "position_id": Tensor(np.asarray(batch["position_id"], np.int32)),
                "attention_mask": Tensor(np.asarray(batch["attention_mask"], np.float32))}
        emb = self.embedding.forward_one_step(data)
        mask = data["attention_mask"]  # A's own input, passed through the embedding net unchanged
        scale = _scale_tensor(self.head_opt)
        self.channel.send(make_message(Kind.FWD, step, {"embedding_table": emb["embedding_table"],
                                                        "attention_mask": mask},
                                       loss_scale=np.asarray(self.head_opt.loss_scale_value(), np.float32)))
        self.pump()
        reply = self._expect(self.channel.recv(), Kind.HIDDEN, step)
        remote = {"hidden_states": reply["hidden_states"]}
        local = {"input_ids": data["input_ids"], "word_table": emb["word_table"],
                 "position_id": emb["position_id"], "attention_mask": mask}
        # one compiled graph in graph mode (the head's sensitivity, the loss scale, is known here)
        out, head_grads = self.head.forward_backward_one_step(local, remote, sens={"loss_scale": {"output": scale}})
        loss = out["output"]
        hidden_grad, unsendable = wire_safe_gradient(head_grads["output"]["hidden_states"],
                                                     self.wire_configs.get("hidden_states"))
        self.channel.send(make_message(Kind.GRAD, step, {"output": {"hidden_states": hidden_grad}}))
        self.pump()
        reply = self._expect(self.channel.recv(), Kind.EMB_GRAD, step)
        self.embedding.backward_one_step(data, sens={
            "hidden_states": {"embedding_table": reply["hidden_states"]["embedding_table"]},
            "output": {"word_table": head_grads["output"]["word_table"]}})
        # the agreement: one global norm, one overflow decision
        head_sq, head_of = self.head_opt.local_scalars()
        emb_sq, emb_of = self.embedding_opt.local_scalars()
        peer_sq, peer_of = float(_num(reply["meta"]["sq_norm"])), bool(_num(reply["meta"]["overflow"]))
        total_sq = np.float32(head_sq) + np.float32(emb_sq) + np.float32(peer_sq)
        global_norm = np.sqrt(np.float32(total_sq)).astype(np.float32)
        overflow = bool(head_of or emb_of or peer_of or unsendable or not np.isfinite(total_sq))
        self.channel.send(make_message(Kind.DECISION, step, global_norm=global_norm, overflow=np.asarray(overflow),
                                       save=np.asarray(bool(save))))
        self.pump()
        self.last_scale = float(scale.asnumpy())
        self.head_opt.step(global_norm, overflow)
        self.embedding_opt.step(global_norm, overflow)
        self.last_overflow = overflow
        return float(loss.asnumpy())

    # ---- evaluation
    def evaluate(self, batches: Iterator[Tuple[int, Mapping[str, np.ndarray]]],
                 max_batches: Optional[int] = None) -> Tuple[float, float, int]:
        """Token-weighted eval loss and perplexity over `batches` (dropout off on both parties)."""
        self.metric.clear()
        self.set_train(False)
        try:
            for i, (_, batch) in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                data = {"input_ids": Tensor(np.asarray(batch["input_ids"], np.int32)),
                        "position_id": Tensor(np.asarray(batch["position_id"], np.int32)),
                        "attention_mask": Tensor(np.asarray(batch["attention_mask"], np.float32))}
                emb = self.embedding.eval_one_step(data)
                # with EmbeddingDP, FLModel has already replaced the activations by their codes
                self.channel.send(make_message(Kind.EVAL, i, {"embedding_table": emb["embedding_table"],
                                                              "attention_mask": data["attention_mask"]}))
                self.pump()
                reply = self._expect(self.channel.recv(), Kind.EVAL_HIDDEN, i)
                local = {"input_ids": data["input_ids"], "word_table": emb["word_table"],
                         "position_id": emb["position_id"], "attention_mask": data["attention_mask"]}
                self.head.eval_one_step(local, {"hidden_states": reply["hidden_states"]})
        finally:
            self.set_train(True)
        mean, ppl = self.metric.eval()
        return mean, ppl, self.metric.tokens

    def finish(self) -> None:
        """Tell the follower training is over."""
        self.channel.send(make_message(Kind.DONE, self.global_step))
        self.pump()

    # ---- checkpoints
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
class FollowerParty(_Party):
    """Party B: the transformer blocks. Holds no data; reacts to party A's messages.

    The optimizer (its LR schedule depends on the total number of steps, which only the data
    owner knows) is built after the handshake, by `build(warmup, decay)`.
    """

    role, peer_role = FOLLOWER, LEADER

    def __init__(self, config: PanguAlphaConfig, channel: Any, checkpoint_dir: Optional[str] = None,
                 compress: str = "none") -> None:
        super().__init__(channel, compress)
        self.config = config
        self.checkpoint_dir = checkpoint_dir
        self.net = BackboneLossNet(config)
        self.net.set_train(True)
        self.yaml = party_yaml("backbone", compress)
        # from the yaml: the communicator is made before the handshake, the FLModel after it
        self.wire_configs = configs_of(self.yaml)
        self.opt: Optional[PanguAlphaAdam] = None
        self.model: Optional[FLModel] = None
        self._start_step = 0
        self._phase = "idle"
        self._remote: Optional[Dict[str, Any]] = None
        self.received_keys: set = set()
        self.saved: List[str] = []

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
        if getattr(self, "_resume_file", None):
            self.model.load_ckpt("train", self._resume_file)
            if self.model.global_step != self._start_step:
                raise ValueError(f"{self._resume_file}: holds global_step {self.model.global_step}, "
                                 f"its name says {self._start_step}")

    def _note_keys(self, msg: Mapping, prefix: str = "") -> None:
        for key, value in msg.items():
            if key == "meta":
                continue
            if isinstance(value, Mapping):
                self._note_keys(value, f"{prefix}{key}.")
            else:
                self.received_keys.add(prefix + key)

    def serve_one(self, timeout: Optional[float] = None) -> bool:
        """Handle the next message from the leader; False when the leader says training is done."""
        msg = self.channel.recv(timeout)
        kind = kind_of(msg)
        self._note_keys(msg)
        if kind == Kind.FWD:
            self._expect(msg, Kind.FWD, self.global_step + 1)
            self._check_phase("idle", msg)
            scale = float(_num(msg["meta"]["loss_scale"]))
            if scale != self.opt.loss_scale_value():
                error = (f"loss scale differs at step {step_of(msg)}: leader {scale:g}, follower "
                         f"{self.opt.loss_scale_value():g} (checkpoints of different steps?)")
                self.abort(error)
                raise ProtocolError(error)
            self._remote = {"embedding_table": msg["embedding_table"], "attention_mask": msg["attention_mask"]}
            hidden = self.model.forward_one_step(remote_data_batch=self._remote)["hidden_states"]
            self.channel.send(make_message(Kind.HIDDEN, step_of(msg), {"hidden_states": hidden}))
            self._phase = "forward"
        elif kind == Kind.GRAD:
            step = self.global_step + 1
            self._expect(msg, Kind.GRAD, step)
            self._check_phase("forward", msg)
            grads = self.model.backward_one_step(remote_data_batch=self._remote, sens=msg)
            sq, overflow = self.opt.local_scalars()
            emb_grad, unsendable = wire_safe_gradient(grads["hidden_states"]["embedding_table"],
                                                      self.wire_configs.get("embedding_table"))
            self.channel.send(make_message(Kind.EMB_GRAD, step, {"hidden_states": {
                "embedding_table": emb_grad}},
                sq_norm=np.asarray(sq, np.float32), overflow=np.asarray(bool(overflow or unsendable))))
            self._remote = None
            self._phase = "backward"
        elif kind == Kind.DECISION:
            self._expect(msg, Kind.DECISION, self.global_step)
            self._check_phase("backward", msg)
            meta = msg["meta"]
            self.opt.step(np.float32(_num(meta["global_norm"])), bool(_num(meta["overflow"])))
            if bool(_num(meta["save"])) and self.checkpoint_dir:
                self.saved.append(self.model.save_ckpt(self.checkpoint_dir))
            self._phase = "idle"
        elif kind == Kind.EVAL:
            self._check_phase("idle", msg)
            self.net.set_train(False)
            try:
                remote = {"embedding_table": msg["embedding_table"], "attention_mask": msg["attention_mask"]}
                hidden = self.model.eval_one_step(remote_data_batch=remote)["hidden_states"]
            finally:
                self.net.set_train(True)
            self.channel.send(make_message(Kind.EVAL_HIDDEN, step_of(msg), {"hidden_states": hidden}))
        elif kind == Kind.DONE:
            self._expect(msg, Kind.DONE, self.global_step)
            return False
        else:
            self._expect(msg, Kind.FWD, self.global_step + 1)  # raises with the details
        return True

    def _check_phase(self, want: str, msg: Mapping) -> None:
        if self._phase != want:
            error = (f"{Kind.NAMES.get(kind_of(msg))} of step {step_of(msg)} arrived while the follower is in "
                     f"phase '{self._phase}' of step {self.global_step + (self._phase != 'idle')}")
            self.abort(error)
            raise ProtocolError(error)


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------
def split_defaults(parser: argparse.ArgumentParser) -> None:
    """Defaults of the split programs that differ from the centralised trainer's.

    Loss scale 1024 as in the original split example. PyNative: FLModel reuses the forward's
    autodiff tape there (one forward + one backward per party and step); in graph mode every
    backward_one_step recompiles its vjp (~1 s per call on CPU), so graph mode is much slower.
    """
    parser.set_defaults(loss_scale=1024.0, mode="pynative")


def add_split_args(parser: argparse.ArgumentParser, communicator: bool = True,
                   data_owner: bool = True) -> argparse.ArgumentParser:
    """Flags of the split programs on top of `add_training_args` (`data_owner`: party A's flags too)."""
    g = parser.add_argument_group("split learning")
    g.add_argument("--compress", choices=WIRE_MODES, default="none",
                   help="compression of the exchanged tensors: none (yaml/*.yaml), min_max6 "
                        "(yaml/*_compressed.yaml: 6-bit min_max on activations and their gradients, 1-bit "
                        "bit_pack on the mask), min_max8 or fp16 (the same yaml with 8 bits / fp16 casts). "
                        "Both parties must use the same choice (checked at the handshake)")
    if data_owner:
        g.add_argument("--embedding_dp", action="store_true",
                       help="EmbeddingDP on the embedding activations sent to party B (yaml/embedding_dp.yaml: "
                            "1-bit codes, sent as 1-bit bit_pack)")
        g.add_argument("--embedding_dp_eps", type=float, default=None,
                       help="with --embedding_dp: randomized response with this eps (default: none, "
                            "deterministic 1-bit quantisation)")
    if not communicator:
        g.add_argument("--wire", action="store_true",
                       help="one process: pass every message through the codec as the communicator would "
                            "(on by default with --compress or --embedding_dp)")
    g.add_argument("--log_file", default=None, help="also write the log to this file")
    g.add_argument("--peer_timeout", type=float, default=120.0,
                   help="seconds to wait for the peer at startup (handshake) and for a send to be accepted")
    g.add_argument("--step_timeout", type=float, default=3600.0,
                   help="seconds to wait for the peer's reply within a training step")
    if communicator:
        g.add_argument("--http_server_address", default="127.0.0.1:10087", help="ip:port this party listens on")
        g.add_argument("--remote_server_address", default="127.0.0.1:10086", help="ip:port of the peer")
        from .utils import str2bool  # pylint: disable=import-outside-toplevel
        g.add_argument("--enable_ssl", type=str2bool, nargs="?", const=True, default=False,
                       help="mutual TLS between the parties (true/false)")
        g.add_argument("--server_password", default=None, help="password of the server certificate")
        g.add_argument("--client_password", default=None, help="password of the client certificate")
        g.add_argument("--server_cert_path", default=None, help="server certificate (.p12 or .pem with key)")
        g.add_argument("--client_cert_path", default=None, help="client certificate (.p12 or .pem with key)")
        g.add_argument("--ca_cert_path", default=None, help="CA certificate the peer is verified against")
        g.add_argument("--crl_path", default=None, help="optional certificate revocation list")
    return parser


def make_communicator(args: argparse.Namespace, role: str,
                      compress_configs: Optional[Mapping[str, Any]] = None) -> CommChannel:
    """Launch this party's server and return the channel to the peer (names: leader / follower).

    `compress_configs`: {tensor: CompressConfig} of the tensors this party sends (from its yamls, `configs_of`).
    """
    from mindspore_federated import ServerConfig, SSLConfig, VerticalFederatedCommunicator  # pylint: disable=import-outside-toplevel
    peer = FOLLOWER if role == LEADER else LEADER
    ssl_config = None
    if args.enable_ssl:
        missing = [flag for flag in ("server_cert_path", "client_cert_path", "ca_cert_path")
                   if not getattr(args, flag)]
        if missing:
            raise ValueError(f"--enable_ssl needs {', '.join('--' + m for m in missing)}")
        ssl_config = SSLConfig(args.server_password, args.client_password, args.server_cert_path,
                               args.client_cert_path, args.ca_cert_path, crl_path=args.crl_path)
    comm = VerticalFederatedCommunicator(
        ServerConfig(role, args.http_server_address), ServerConfig(peer, args.remote_server_address),
        enable_ssl=bool(args.enable_ssl), ssl_config=ssl_config, compress_configs=compress_configs or None,
        connect_timeout=float(min(10.0, args.peer_timeout)), send_deadline=float(args.peer_timeout))
    comm.launch()
    return CommChannel(comm, peer, args.step_timeout)


def handshake(party: _Party, fingerprint: np.ndarray, timeout: float, **extra: Any) -> Mapping:
    """Both parties send first, then check what the peer sent (so neither waits on the other)."""
    party.send_hello(fingerprint, **extra)
    return party.check_hello(party.channel.recv(timeout), fingerprint)


def describe_time(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def lr_of(opt: PanguAlphaAdam, config: PanguAlphaConfig, warmup: int, decay: int) -> float:
    """Learning rate used by the last applied update (for the loss log)."""
    return lr_at(opt.applied_updates() - 1, config.start_lr, config.end_lr, warmup, decay)


def now() -> float:
    return time.time()


def checkpoint_dirs(args: argparse.Namespace) -> Dict[str, str]:
    base = os.path.join(args.output_dir, "checkpoints")
    return {LEADER: os.path.join(base, LEADER), FOLLOWER: os.path.join(base, FOLLOWER)}


# ----------------------------------------------------------------------------------------------
# the programs (run_pangu_train_local.py / _leader.py / _follower.py are thin wrappers)
# ----------------------------------------------------------------------------------------------
def set_context(args: argparse.Namespace) -> None:
    """Same execution context as train_centralized.set_context."""
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    ms.set_context(mode=ms.GRAPH_MODE if args.mode == "graph" else ms.PYNATIVE_MODE,
                   device_target=args.device_target)
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


def _leader_side(args: argparse.Namespace, local: bool, measure: bool = False) -> Dict[str, Any]:
    """Party A's program; with `local` party B runs in the same process behind a LocalChannel."""
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
    channel: Any = None
    follower_channel: Any = None
    if local:
        wire = bool(getattr(args, "wire", False)) or compress != "none" or embedding_dp
        channel, follower_channel = LocalChannel.pair(measure, wire=wire)
        follower = FollowerParty(config, follower_channel, dirs[FOLLOWER], compress=compress)
        follower_channel.set_compress_configs(follower.wire_configs)
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
        logger.info("split PanGu-alpha %s: party A %d parameters (embedding + head), vocab %d, seq %d, batch %d, "
                    "%d steps (%d per epoch), warmup %d, lr %g -> %g, loss scale %g, mode %s, %s",
                    args.config, leader.num_parameters(), config.vocab_size, config.seq_length, config.batch_size,
                    total, source.steps_per_epoch, warmup, config.start_lr, config.end_lr,
                    leader.head_opt.loss_scale_value(), args.mode,
                    "both parties in this process" if local else f"peer {channel.where}")
        fingerprint = config_fingerprint(config)
        hello = dict(total_steps=np.asarray(total, np.int64), warmup=np.asarray(warmup, np.int64),
                     decay=np.asarray(decay, np.int64))
        if local:
            leader.send_hello(fingerprint, **hello)
            if args.resume:
                follower.resume_step(dirs[FOLLOWER])
            follower.send_hello(config_fingerprint(config, unknown=("vocab_size", "eod_id")))
            follower.check_hello(follower.channel.recv(), fingerprint)
            follower.build(warmup, decay)
            leader.check_hello(channel.recv(), fingerprint)
            logger.info("party B: %d parameters (transformer blocks)", follower.num_parameters())
        else:
            logger.info("waiting for the follower (handshake, up to %g s)", args.peer_timeout)
            handshake(leader, fingerprint, args.peer_timeout, **hello)
            logger.info("handshake with the follower done: same settings, both at step %d", start)

        loss_log = LossLog(args.loss_log)
        if start:
            loss_log.load_existing(start)
        losses: List[float] = []
        saved: List[str] = []
        step, epoch = start, 1
        wire_bytes: List[Tuple[int, int]] = []   # per step: (bytes A sent, bytes B sent or -1)
        t0 = now()
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
                      "overflow": int(leader.last_overflow), "elapsed_s": round(now() - t0, 4),
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
                saved.extend(leader.save(leader_dir if args.resume and args.load_ckpt_path else dirs[LEADER]))
        elapsed = now() - t0
        loss_log.write()
        trained = step - start
        logger.info("trained %d steps in %s (%.2f steps/s)", trained, describe_time(elapsed),
                    trained / max(elapsed, 1e-9))
        result: Dict[str, Any] = {"losses": losses, "final_step": step, "checkpoints": saved, "config": config,
                                  "steps_per_second": trained / max(elapsed, 1e-9), "leader": leader,
                                  "follower": follower, "channel": channel, "follower_channel": follower_channel,
                                  "wire_bytes": wire_bytes}
        if wire_bytes and wire_bytes[-1][0]:
            logger.info("wire bytes per training step (mean): A->B %.0f%s", np.mean([a for a, _ in wire_bytes]),
                        f", B->A {np.mean([b for _, b in wire_bytes]):.0f}" if wire_bytes[-1][1] >= 0 else "")
        if args.eval_data_url or args.synthetic:
            eval_source = BatchSource(args, config, train=False)
            mean, ppl, tokens = leader.evaluate(eval_source.iterate(0, 1), args.eval_steps)
            logger.info("eval loss: %.6f perplexity: %.4f (%d tokens)", mean, ppl, tokens)
            result.update(eval_loss=mean, perplexity=ppl)
        leader.finish()
        return result
    except (ProtocolError, PeerAborted):
        raise
    except Exception as err:
        if "leader" in locals():
            leader.abort(f"the leader failed: {type(err).__name__}: {err}")
        raise
    finally:
        if not local and channel is not None:
            channel.close()


def run_local(args: argparse.Namespace, measure: bool = False) -> Dict[str, Any]:
    """Both parties in one process (tensors passed in memory); returns losses, parties, metrics."""
    from .utils import setup_logging  # pylint: disable=import-outside-toplevel
    setup_logging()
    add_log_file(args.log_file)
    return _leader_side(args, local=True, measure=measure)


def run_leader(args: argparse.Namespace) -> Dict[str, Any]:
    """Party A as its own process, talking to the follower over the communicator."""
    from .utils import setup_logging  # pylint: disable=import-outside-toplevel
    setup_logging()
    add_log_file(args.log_file)
    return _leader_side(args, local=False)


def run_follower(args: argparse.Namespace) -> Dict[str, Any]:
    """Party B as its own process: no data, only activations and gradients from the leader."""
    from .utils import config_from_args, setup_logging  # pylint: disable=import-outside-toplevel
    setup_logging()
    add_log_file(args.log_file)
    for flag in ("data_url", "eval_data_url", "vocab_model"):
        if getattr(args, flag, None):
            raise ValueError(f"--{flag} given to the follower: party B holds no data (only party A, the "
                             f"leader, reads the dataset and the vocabulary)")
    if getattr(args, "synthetic", False):
        raise ValueError("--synthetic given to the follower: the data (real or synthetic) lives at the leader")
    set_context(args)
    config = config_from_args(args)
    unknown = ("eod_id",) + (() if args.vocab_size else ("vocab_size",))
    fingerprint = config_fingerprint(config, unknown=unknown)
    directory = args.load_ckpt_path if (args.resume and args.load_ckpt_path) else checkpoint_dirs(args)[FOLLOWER]
    compress = getattr(args, "compress", "none")
    follower = FollowerParty(config, None, directory, compress=compress)
    channel = follower.channel = make_communicator(args, FOLLOWER, follower.wire_configs)
    logger.info("wire: --compress %s; B sends %s", compress, describe_wire(follower.wire_configs))
    try:
        if args.resume:
            start = follower.resume_step(directory)
            logger.info("follower resumes at step %d (%s)", start, directory)
        logger.info("split PanGu-alpha %s: party B %d parameters (transformer blocks), waiting for the leader "
                    "at %s (handshake, up to %g s)", args.config, follower.num_parameters(),
                    args.remote_server_address, args.peer_timeout)
        meta = handshake(follower, fingerprint, args.peer_timeout)
        total, warmup, decay = (int(_num(meta[k])) for k in ("total_steps", "warmup", "decay"))
        follower.build(warmup, decay)
        logger.info("handshake with the leader done: %d steps, warmup %d, starting at step %d", total, warmup,
                    follower.global_step)
        t0 = now()
        start = follower.global_step
        last = start
        bytes_per_step: List[int] = []
        mark = channel.bytes_sent
        while follower.serve_one():
            step = follower.global_step
            if step != last:
                bytes_per_step.append(channel.bytes_sent - mark)
                mark = channel.bytes_sent
                if step % max(args.log_steps, 1) == 0 or step == total:
                    logger.info("follower step %d/%d, wire bytes B->A %d", step, total, bytes_per_step[-1])
            last = step
        elapsed = now() - t0
        logger.info("follower done at step %d (%d steps in %s)", follower.global_step,
                    follower.global_step - start, describe_time(elapsed))
        if bytes_per_step:
            logger.info("follower wire bytes per training step (mean): B->A %.0f", np.mean(bytes_per_step))
        return {"final_step": follower.global_step, "checkpoints": follower.saved,
                "received_keys": sorted(follower.received_keys), "follower": follower,
                "bytes_per_step": bytes_per_step}
    finally:
        channel.close()
