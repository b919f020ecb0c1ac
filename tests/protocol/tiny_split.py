"""A tiny three-part network in numpy, trained split across two parties through the protocol and,
independently, in one piece: the reference the split run must reproduce.

    leader bottom  a = x @ W1            (4 -> 3)
    follower       h = tanh(a @ W2)      (3 -> 3)
    leader top     loss = mean((h @ W3 - t)^2)

Every optimizer here is plain SGD with one global-norm clip and a dynamic loss scale (halved and the
update skipped on overflow), the same rules as PanGu's optimizer, but 20 lines of numpy.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from mindspore_federated.protocol import (Decision, FollowerLoop, GradientStats, Kind, LocalChannel, Message,
                                          PeerSession)

LR, CLIP = 0.1, 1.0


def init_weights(seed: int = 0) -> Dict[str, np.ndarray]:
    rng = np.random.RandomState(seed)
    return {"W1": rng.randn(4, 3).astype(np.float32), "W2": rng.randn(3, 3).astype(np.float32),
            "W3": rng.randn(3, 1).astype(np.float32)}


def batch(step: int) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(100 + step)
    x = rng.randn(8, 4).astype(np.float32)
    return x, (x.sum(axis=1, keepdims=True) > 0).astype(np.float32)


class ScaledSGD:
    """SGD on some weights; `apply_gradients` then the agreed `step` (GlobalNormOptimizer)."""

    def __init__(self, weights: Dict[str, np.ndarray], names: List[str], loss_scale: float = 1024.0) -> None:
        self.weights, self.names, self.loss_scale = weights, names, np.float32(loss_scale)
        self.pending: Optional[List[np.ndarray]] = None

    def apply_gradients(self, scaled: List[np.ndarray]) -> None:
        self.pending = [g / self.loss_scale for g in scaled]

    def local_scalars(self) -> Tuple[float, bool]:
        sq = np.float32(sum(np.float32((g.astype(np.float32) ** 2).sum()) for g in self.pending))
        return float(sq), not all(np.isfinite(g).all() for g in self.pending)

    def step(self, global_norm: Any, overflow: Any) -> None:
        if overflow:
            self.loss_scale = np.float32(self.loss_scale / 2)
        else:
            factor = CLIP / max(float(global_norm), CLIP)
            for name, g in zip(self.names, self.pending):
                self.weights[name] -= np.float32(LR * factor) * g
        self.pending = None


def reference(steps: int, overflow_at: Optional[int] = None) -> Dict[str, Any]:
    """The whole model in one piece (float64 norm); `overflow_at`: that step's update is skipped."""
    w = init_weights()
    scale = 1024.0
    losses = []
    for step in range(1, steps + 1):
        x, t = batch(step)
        a = x @ w["W1"]
        h = np.tanh(a @ w["W2"])
        y = h @ w["W3"]
        losses.append(float(np.mean((y - t) ** 2)))
        dy = 2 * (y - t) / y.size
        g3 = h.T @ dy
        dh = dy @ w["W3"].T
        dz = dh * (1 - h ** 2)
        g2 = a.T @ dz
        g1 = x.T @ (dz @ w["W2"].T)
        if step == overflow_at:
            scale /= 2
            continue
        norm = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in (g1, g2, g3)))
        factor = CLIP / max(norm, CLIP)
        for name, g in (("W1", g1), ("W2", g2), ("W3", g3)):
            w[name] = w[name] - LR * factor * g
    return {"losses": losses, "weights": w, "scale": scale}


class TinyFollower:
    """The follower's handler: W2 only. At `poison_step`, `poison` "weights" puts an Inf into its own
    gradient; "unsendable" makes its gradient for the leader one the wire cannot carry (sent as zeros
    with the overflow flag, as `sendable_gradient` does): then only the follower's flag tells."""

    def __init__(self, weights: Dict[str, np.ndarray], poison_step: Optional[int] = None,
                 poison: str = "weights") -> None:
        self.weights = weights
        self.opt = ScaledSGD(weights, ["W2"])
        self.poison_step, self.poison = poison_step, poison
        self.step = 0
        self._a: Optional[np.ndarray] = None
        self._h: Optional[np.ndarray] = None

    def forward(self, msg: Message) -> Mapping[str, Any]:
        self._a = np.asarray(msg.tensor("act"))
        self._h = np.tanh(self._a @ self.weights["W2"])
        return {"hidden": self._h}

    def backward(self, msg: Message) -> Tuple[Mapping[str, Any], GradientStats]:
        self.step += 1
        dh = np.asarray(msg.tensor("grad", "hidden"))
        dz = dh * (1 - self._h ** 2)
        g2 = self._a.T @ dz
        back = dz @ self.weights["W2"].T
        unsendable = False
        if self.step == self.poison_step and self.poison == "weights":
            g2 = g2.copy()
            g2[0, 0] = np.inf
        elif self.step == self.poison_step:
            back, unsendable = np.zeros_like(back), True
        self.opt.apply_gradients([g2])
        return {"grad": {"act": back}}, GradientStats.of(self.opt, overflow=unsendable)

    def apply(self, decision: Decision) -> None:
        decision.apply(self.opt)

    def evaluate(self, msg: Message) -> Mapping[str, Any]:
        return {"hidden": np.tanh(np.asarray(msg.tensor("act")) @ self.weights["W2"])}


def split_run(steps: int, poison_step: Optional[int] = None, wire: bool = False,
              poison: str = "weights") -> Dict[str, Any]:
    """Both parties in this process over a LocalChannel pair, driven by the library's session/loop."""
    lead_end, follow_end = LocalChannel.pair(wire=wire)
    w = init_weights()
    handler = TinyFollower({"W2": w["W2"].copy()}, poison_step, poison)
    follower = PeerSession(follow_end, "follower", "leader", lambda: loop.completed)
    loop = FollowerLoop(follower, handler)
    leader = PeerSession(lead_end, "leader", "follower", lambda: done[0], pump=loop.serve_one)
    mine = {"W1": w["W1"].copy(), "W3": w["W3"].copy()}
    opt = ScaledSGD(mine, ["W3", "W1"])
    done, losses = [0], []
    settings = {"in": 4, "hidden": 3}
    leader.hello(settings)
    follower.handshake(settings)
    leader.check_hello(leader.receive_raw(), settings)
    for step in range(1, steps + 1):
        x, t = batch(step)
        a = x @ mine["W1"]
        h = np.asarray(leader.exchange(Kind.FORWARD, step, {"act": a}, Kind.FORWARD_REPLY).tensor("hidden"))
        y = h @ mine["W3"]
        losses.append(float(np.mean((y - t) ** 2)))
        dy = 2 * (y - t) / y.size * opt.loss_scale
        reply = leader.exchange(Kind.BACKWARD, step, {"grad": {"hidden": dy @ mine["W3"].T}}, Kind.BACKWARD_REPLY)
        da = np.asarray(reply.tensor("grad", "act"))
        opt.apply_gradients([h.T @ dy, x.T @ da])
        decision = leader.agree(step, GradientStats.of(opt), reply)
        decision.apply(opt)
        done[0] = step
    leader.finish()
    return {"losses": losses, "weights": {**mine, "W2": handler.weights["W2"]}, "leader_scale": opt.loss_scale,
            "follower_scale": handler.opt.loss_scale, "loop": loop, "leader": leader}
