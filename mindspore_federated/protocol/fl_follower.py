"""A follower whose side of each step follows from its FLModel's yaml: no model-specific code.

`FLModelFollower` is a `FollowerHandler` for a follower that holds one FLModel (its train net, grad
scalers and optimizers as the yaml declares them):

- FORWARD: the train net's ``source: remote`` inputs are read from the message, its ``source:
  local`` inputs come from `local_batch(step)` (a follower with its own data); the outputs with
  ``destination: remote`` go back.
- BACKWARD: the message is the ``sens`` dict of the yaml (``{tag: {output: gradient}}``); the grad
  scalers' results go back, with this party's gradient statistics for the decision.
- DECISION: every optimizer applies it; a checkpoint is saved when the leader asks.
- EVAL: the eval net on the same inputs; its ``destination: remote`` outputs (or all) go back.

A gradient the wire compression cannot carry is sent as zeros with the overflow flag
(`sendable_gradient`).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from .decision import Decision, GlobalNormOptimizer, GradientStats, sendable_gradient
from .messages import Message

__all__ = ["FLModelFollower"]


class FLModelFollower:
    """FollowerHandler over one FLModel; see the module docstring.

    Args:
        model: the follower's FLModel (may be set later, e.g. after the handshake).
        optimizers: the GlobalNormOptimizers the model's yaml uses.
        checkpoint_dir: where DECISION(save) writes `model.save_ckpt`; None = never.
        local_batch: step -> {input name: tensor} of the follower's own training data (None: it has none).
        local_eval_batch: EVAL index -> {input name: tensor} of its own evaluation data.
    """

    def __init__(self, model: Any = None, optimizers: Sequence[GlobalNormOptimizer] = (),
                 checkpoint_dir: Optional[str] = None,
                 local_batch: Optional[Callable[[int], Mapping[str, Any]]] = None,
                 local_eval_batch: Optional[Callable[[int], Mapping[str, Any]]] = None) -> None:
        self.model = model
        self.optimizers = list(optimizers)
        self.checkpoint_dir = checkpoint_dir
        self.local_batch = local_batch
        self.local_eval_batch = local_eval_batch
        self.saved: list = []
        self._inputs: Optional[Tuple[Dict[str, Any], Dict[str, Any]]] = None

    @staticmethod
    def _split_inputs(msg: Message, net: Any, source: Optional[Callable[[int], Mapping[str, Any]]]
                      ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        remote = {item.name: msg.tensor(item.name) for item in net.inputs if item.source == "remote"}
        local = dict(source(msg.step)) if source is not None else {}
        return local, remote

    @staticmethod
    def _to_peer(outputs: Mapping[str, Any], net: Any) -> Dict[str, Any]:
        remote = [item.name for item in net.outputs if item.destination == "remote"]
        return {name: outputs[name] for name in (remote or list(outputs))}

    def forward(self, msg: Message) -> Mapping[str, Any]:
        net = self.model.yaml_data.train_net
        self._inputs = self._split_inputs(msg, net, self.local_batch)
        return self._to_peer(self.model.forward_one_step(*self._inputs), net)

    def backward(self, msg: Message, sens: Optional[Mapping[str, Any]] = None
                 ) -> Tuple[Mapping[str, Any], GradientStats]:
        """`sens`: the sens dict, if not the message's tensors (a relay stage: its downstream's reply)."""
        if self._inputs is None:
            raise RuntimeError(f"{msg.describe()}: no forward pass of this step to differentiate")
        local, remote = self._inputs
        self._inputs = None
        grads = self.model.backward_one_step(local, remote, sens=msg.tensors() if sens is None else sens)
        configs = self.model.get_compress_configs()
        unsendable = False
        out: Dict[str, Dict[str, Any]] = {}
        for scaler, per_input in grads.items():
            out[scaler] = {}
            for name, grad in per_input.items():
                out[scaler][name], bad = sendable_gradient(grad, configs.get(name))
                unsendable = unsendable or bad
        return out, GradientStats.of(*self.optimizers, overflow=unsendable)

    def apply(self, decision: Decision) -> None:
        decision.apply(*self.optimizers)
        if decision.save and self.checkpoint_dir:
            self.saved.append(self.model.save_ckpt(self.checkpoint_dir))

    def evaluate(self, msg: Message) -> Mapping[str, Any]:
        net = self.model.yaml_data.eval_net
        local, remote = self._split_inputs(msg, net, self.local_eval_batch)
        return self._to_peer(self.model.eval_one_step(local, remote), net)
