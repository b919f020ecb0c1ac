"""A pipeline stage in the middle: a follower to its upstream party, a leader to its downstream one.

A network cut into more than two parts runs as a chain of the two-party protocol: the leader talks
to stage 1 exactly as to a single follower; stage 1 holds its own sub-network and talks to stage 2
through a second `PeerSession`, and so on (a stage's downstream may itself be a relay)::

    leader --FORWARD--> stage 1 --FORWARD--> stage 2
    leader <--REPLY---- stage 1 <--REPLY---- stage 2      (stage 2's output, passed on unchanged)

- FORWARD: the stage's own forward pass; its outputs go downstream; the downstream reply is the
  reply upstream (the last stage's output returns through every stage).
- BACKWARD: passed on downstream unchanged; the reply is this stage's ``sens``; this stage's own
  backward; upstream gets the gradients for its inputs and the statistics of every stage behind it
  (`GradientStats.combine`: float32 sum, own share first, flags ORed), so the leader's one
  decision covers the whole model.
- DECISION: passed on downstream, then applied here. EVAL as FORWARD. DONE is passed on.
- Errors: an ABORT from downstream stops this stage, which tells upstream the downstream's reason;
  an ABORT from upstream (or any failure here) is passed on downstream (`FollowerLoop` calls `stop`).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple

from .decision import Decision, GradientStats
from .messages import Kind, Message, PeerAborted, ProtocolError
from .session import PeerSession

try:
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore

__all__ = ["FLModelRelay", "Stage"]


class Stage(Protocol):
    """The stage's own sub-network: a FollowerHandler whose backward can take its sens from elsewhere
    (`FLModelFollower` is one)."""

    def forward(self, msg: Message) -> Mapping[str, Any]:
        """Own forward pass; returns the outputs for the downstream stage."""

    def backward(self, msg: Message, sens: Optional[Mapping[str, Any]] = None
                 ) -> Tuple[Mapping[str, Any], GradientStats]:
        """Own backward pass with `sens`; returns (gradients for the upstream party, own statistics)."""

    def apply(self, decision: Decision) -> None:
        """Apply the agreed update (and save a checkpoint when asked)."""

    def evaluate(self, msg: Message) -> Mapping[str, Any]:
        """Own eval forward pass; returns the outputs for the downstream stage."""


class FLModelRelay:
    """FollowerHandler of a middle stage: `stage` computes, `downstream` is the session to the next one.

    The downstream session's handshake is the caller's (before the loop starts); its settings should
    say which part of the model each stage holds, so that a mis-split is refused at startup.
    """

    def __init__(self, stage: Stage, downstream: PeerSession) -> None:
        self.stage = stage
        self.downstream = downstream
        self._step = 0

    def _exchange(self, msg: Message, tensors: Mapping[str, Any], reply: Kind, **scalars: Any) -> Message:
        """Send `tensors` downstream as a message of `msg`'s kind and step; the downstream's reply.

        An ABORT from downstream becomes a ProtocolError with its reason: `FollowerLoop` tells upstream."""
        try:
            return self.downstream.exchange(msg.kind, msg.step, tensors, reply, **scalars)
        except PeerAborted as err:
            raise ProtocolError(str(err)) from err

    def forward(self, msg: Message) -> Mapping[str, Any]:
        return self._exchange(msg, self.stage.forward(msg), Kind.FORWARD_REPLY, **msg.scalars()).tensors()

    def backward(self, msg: Message) -> Tuple[Mapping[str, Any], GradientStats]:
        self._step = msg.step
        reply = self._exchange(msg, msg.tensors(), Kind.BACKWARD_REPLY)
        tensors, ours = self.stage.backward(msg, sens=reply.tensors())
        return tensors, GradientStats.combine(ours, GradientStats.from_message(reply))

    def apply(self, decision: Decision) -> None:
        # downstream first: across processes it updates while this stage does
        try:
            self.downstream.send(Kind.DECISION, self._step, **decision.as_scalars())
        except PeerAborted as err:
            raise ProtocolError(str(err)) from err
        self.stage.apply(decision)

    def evaluate(self, msg: Message) -> Mapping[str, Any]:
        return self._exchange(msg, self.stage.evaluate(msg), Kind.EVAL_REPLY, **msg.scalars()).tensors()

    def finish(self) -> None:
        """The leader said DONE: so does this stage, downstream."""
        self.downstream.finish()

    def stop(self, reason: str) -> None:
        """This stage stops (its upstream aborted, or it failed): tell downstream why (once)."""
        self.downstream.abort(reason)
