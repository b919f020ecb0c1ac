"""The leader's side of each step for the usual cut, from its FLModels' yamls.

The leader holds a *bottom* FLModel (its data -> activations for the follower, and tensors it keeps
for itself) and a *top* FLModel (the follower's outputs + its own tensors -> the loss); either may
be absent. `FLModelLeader.train_step` runs one step of the protocol with them:

1. bottom forward; its ``destination: remote`` outputs go in FORWARD;
2. the FORWARD_REPLY gives the top's ``source: remote`` inputs; top forward and backward (with the
   caller's ``sens``, e.g. the loss scale; ``FLModel.forward_backward_one_step``, one graph in
   GRAPH_MODE);
3. the top's grad-scaler results for remote inputs go in BACKWARD, those for local inputs are kept;
4. the BACKWARD_REPLY's tensors plus the kept ones are the bottom's ``sens`` dict: bottom backward;
5. the decision over all the leader's optimizers and the follower's statistics, applied.

This covers PanGu-alpha (embedding | blocks | head, with the head's tied word-table gradient fed
back to the embedding) and a Wide&Deep-like split (leader bottom + top, follower bottom).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from .decision import Decision, GlobalNormOptimizer, GradientStats, sendable_gradient
from .messages import Kind
from .session import PeerSession

__all__ = ["FLModelLeader"]


def _outputs_to(outputs: Mapping[str, Any], net: Any, destination: str) -> Dict[str, Any]:
    return {item.name: outputs[item.name] for item in net.outputs if item.destination == destination}


class FLModelLeader:
    """Drives the leader's FLModels through `session`; see the module docstring.

    Args:
        session: the leader's PeerSession.
        bottom / top: FLModels (None where the leader has no such part).
        optimizers: the leader's GlobalNormOptimizers, in the order their squared norms are summed.
    """

    def __init__(self, session: PeerSession, bottom: Any, top: Any,
                 optimizers: Sequence[GlobalNormOptimizer]) -> None:
        if top is None:
            raise ValueError("FLModelLeader needs the top FLModel (the one that computes the loss)")
        self.session, self.bottom, self.top = session, bottom, top
        self.optimizers = list(optimizers)

    def _forward(self, batch: Mapping[str, Any], step: int, kind: Kind, reply_kind: Kind, phase: str,
                 scalars: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """(local inputs of the top, remote inputs of the top) after the FORWARD/EVAL exchange."""
        local: Dict[str, Any] = dict(batch)
        to_peer: Dict[str, Any] = {}
        if self.bottom is not None:
            net = getattr(self.bottom.yaml_data, phase)
            run = self.bottom.forward_one_step if phase == "train_net" else self.bottom.eval_one_step
            outputs = run(batch)
            to_peer = _outputs_to(outputs, net, "remote")
            local.update(_outputs_to(outputs, net, "local"))
        reply = self.session.exchange(kind, step, to_peer, reply_kind, **scalars)
        top_net = getattr(self.top.yaml_data, phase)
        remote = {item.name: reply.tensor(item.name) for item in top_net.inputs if item.source == "remote"}
        return local, remote

    def train_step(self, batch: Mapping[str, Any], step: int, sens: Optional[Mapping[str, Any]] = None,
                   save: bool = False, **scalars: Any) -> Tuple[Mapping[str, Any], Decision]:
        """One training step; returns the top's outputs (the loss) and the agreed decision.

        `sens`: the top's sens dict (e.g. ``{"loss_scale": {"output": scale}}``); `scalars` travel in
        the FORWARD header (e.g. the loss scale, for the follower to check)."""
        local, remote = self._forward(batch, step, Kind.FORWARD, Kind.FORWARD_REPLY, "train_net", scalars)
        # one compiled graph in GRAPH_MODE: the top's sensitivities are known here
        outputs, top_grads = self.top.forward_backward_one_step(local, remote, sens=dict(sens or {}))
        configs = self.top.get_compress_configs()
        to_peer: Dict[str, Dict[str, Any]] = {}
        kept: Dict[str, Dict[str, Any]] = {}
        unsendable = False
        for scaler, per_input in top_grads.items():
            for name, grad in per_input.items():
                if name in remote:
                    to_peer.setdefault(scaler, {})[name], bad = sendable_gradient(grad, configs.get(name))
                    unsendable = unsendable or bad
                else:
                    kept.setdefault(scaler, {})[name] = grad
        reply = self.session.exchange(Kind.BACKWARD, step, to_peer, Kind.BACKWARD_REPLY)
        if self.bottom is not None:
            bottom_sens = {tag: dict(values) for tag, values in kept.items()}
            for tag, values in reply.tensors().items():
                if not isinstance(values, Mapping):
                    raise self.session.fail(f"malformed message from the {self.session.peer_role}: "
                                            f"BACKWARD_REPLY of step {step}: '{tag}' must be a dict "
                                            f"{{input name: gradient}} (the sens dict of the bottom model)")
                bottom_sens.setdefault(tag, {}).update(values)
            self.bottom.backward_one_step(batch, sens=bottom_sens)
        decision = self.session.agree(step, GradientStats.of(*self.optimizers, overflow=unsendable), reply, save)
        decision.apply(*self.optimizers)
        return outputs, decision

    def eval_step(self, batch: Mapping[str, Any], index: int) -> Mapping[str, Any]:
        """One evaluation batch through both parties; returns the top's eval outputs (metrics updated)."""
        local, remote = self._forward(batch, index, Kind.EVAL, Kind.EVAL_REPLY, "eval_net", {})
        return self.top.eval_one_step(local, remote)
