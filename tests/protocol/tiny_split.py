"""A tiny network in numpy, trained split across parties through the protocol and, independently,
in one piece: the reference the split run must reproduce.

    leader bottom  a = x @ W1            (4 -> 3)
    follower       h = tanh(a @ W2)      (3 -> 3)
    leader top     loss = mean((h @ W3 - t)^2)

With `stages` > 1 the follower's part is a pipeline of that many tanh layers (W2, W2_1, ...), one
per follower stage: the first stages are relays (`FLModelRelay`), the last a plain follower.

Every optimizer here is plain SGD with one global-norm clip and a dynamic loss scale (halved and the
update skipped on overflow), the same rules as PanGu's optimizer, but 20 lines of numpy.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from mindspore_federated.protocol import (Decision, FLModelRelay, FollowerLoop, GradientStats, Kind, LocalChannel,
                                          Message, PeerSession)

LR, CLIP = 0.1, 1.0


def middle_names(stages: int = 1) -> List[str]:
    """The follower stages' weights, in pipeline order."""
    return ["W2"] + [f"W2_{i}" for i in range(1, stages)]


def init_weights(seed: int = 0, stages: int = 1) -> Dict[str, np.ndarray]:
    rng = np.random.RandomState(seed)
    w = {"W1": rng.randn(4, 3).astype(np.float32), "W2": rng.randn(3, 3).astype(np.float32),
         "W3": rng.randn(3, 1).astype(np.float32)}
    for name in middle_names(stages)[1:]:
        w[name] = rng.randn(3, 3).astype(np.float32)
    return w


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


def reference(steps: int, overflow_at: Optional[int] = None, stages: int = 1) -> Dict[str, Any]:
    """The whole model in one piece (float64 norm); `overflow_at`: that step's update is skipped."""
    w = init_weights(stages=stages)
    middle = middle_names(stages)
    scale = 1024.0
    losses = []
    for step in range(1, steps + 1):
        x, t = batch(step)
        hs = [x @ w["W1"]]
        for name in middle:
            hs.append(np.tanh(hs[-1] @ w[name]))
        y = hs[-1] @ w["W3"]
        losses.append(float(np.mean((y - t) ** 2)))
        dy = 2 * (y - t) / y.size
        grads = {"W3": hs[-1].T @ dy}
        dh = dy @ w["W3"].T
        for k in range(len(middle), 0, -1):
            dz = dh * (1 - hs[k] ** 2)
            grads[middle[k - 1]] = hs[k - 1].T @ dz
            dh = dz @ w[middle[k - 1]].T
        grads["W1"] = x.T @ dh
        if step == overflow_at:
            scale /= 2
            continue
        norm = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
        factor = CLIP / max(norm, CLIP)
        for name, g in grads.items():
            w[name] = w[name] - LR * factor * g
    return {"losses": losses, "weights": w, "scale": scale}


class TinyFollower:
    """A follower stage's handler: one tanh layer, weight `weight`, input "act", output `output`
    ("hidden" for the leader's top; "act" when a downstream stage takes it). At `poison_step`,
    `poison` "weights" puts an Inf into its own gradient; "unsendable" makes its gradient for the
    leader one the wire cannot carry (sent as zeros with the overflow flag, as `sendable_gradient`
    does): then only the follower's flag tells; "fail" raises."""

    def __init__(self, weights: Dict[str, np.ndarray], poison_step: Optional[int] = None,
                 poison: str = "weights", weight: str = "W2", output: str = "hidden") -> None:
        self.weights, self.weight, self.output = weights, weight, output
        self.opt = ScaledSGD(weights, [weight])
        self.poison_step, self.poison = poison_step, poison
        self.step = 0
        self._a: Optional[np.ndarray] = None
        self._h: Optional[np.ndarray] = None

    def forward(self, msg: Message) -> Mapping[str, Any]:
        self._a = np.asarray(msg.tensor("act"))
        self._h = np.tanh(self._a @ self.weights[self.weight])
        return {self.output: self._h}

    def backward(self, msg: Message, sens: Optional[Mapping[str, Any]] = None
                 ) -> Tuple[Mapping[str, Any], GradientStats]:
        self.step += 1
        if self.step == self.poison_step and self.poison == "fail":
            raise OSError("disk full")
        dh = np.asarray(msg.tensor("grad", self.output) if sens is None else sens["grad"][self.output])
        dz = dh * (1 - self._h ** 2)
        g2 = self._a.T @ dz
        back = dz @ self.weights[self.weight].T
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
        return {self.output: np.tanh(np.asarray(msg.tensor("act")) @ self.weights[self.weight])}


def _pump(loop: FollowerLoop, errors: Optional[List[BaseException]]) -> Any:
    """Serve one message of the in-process peer. With `errors`, the peer's exception is recorded
    instead of raised, as if it ran in another process (it then only speaks through its ABORT)."""
    def serve() -> None:
        try:
            loop.serve_one()
        except Exception as err:  # pylint: disable=broad-except
            if errors is None:
                raise
            errors.append(err)
    return serve


def follower_chain(w: Dict[str, np.ndarray], stages: int = 1, poison_step: Optional[int] = None,
                   poison: str = "weights", wire: bool = False, errors: Optional[List[BaseException]] = None,
                   settings: Optional[List[Dict[str, Any]]] = None) -> Tuple[LocalChannel, Dict[str, Any]]:
    """The follower stages in this process, each handshaken with the next; the poison goes to the last.
    Returns the leader's end of the channel to stage 1 and {handlers, loops, sessions, pump}."""
    names = ["follower"] + [f"follower{i + 1}" for i in range(1, stages)]
    middle = middle_names(stages)
    handlers: List[Any] = [None] * stages
    loops: List[Any] = [None] * stages
    sessions: List[Any] = [None] * stages   # each stage's upstream session
    ends = [LocalChannel.pair(("leader" if i == 0 else names[i - 1], names[i]), wire=wire) for i in range(stages)]
    for i in reversed(range(stages)):      # the downstream stage exists when its relay is made
        last = i == stages - 1
        stage = TinyFollower({middle[i]: w[middle[i]].copy()}, poison_step if last else None, poison,
                             weight=middle[i], output="hidden" if last else "act")
        handlers[i] = stage
        if not last:
            down = PeerSession(ends[i + 1][0], names[i], names[i + 1], lambda i=i: loops[i].completed,
                               pump=_pump(loops[i + 1], errors))
            handlers[i] = FLModelRelay(stage, down)
        sessions[i] = PeerSession(ends[i][1], names[i], "leader" if i == 0 else names[i - 1],
                                  lambda i=i: loops[i].completed)
        loops[i] = FollowerLoop(sessions[i], handlers[i])
    # handshakes, downstream first: each stage checks its upstream's HELLO once that one sent it
    settings = settings or [{"in": 4, "hidden": 3, "stages": stages}] * stages
    for i in reversed(range(1, stages)):
        handlers[i - 1].downstream.hello(settings[i - 1])
        sessions[i].handshake(settings[i])
        handlers[i - 1].downstream.check_hello(handlers[i - 1].downstream.receive_raw(), settings[i - 1])
    return ends[0][0], {"handlers": handlers, "loops": loops, "sessions": sessions, "pump": _pump(loops[0], errors),
                        "names": names}


def split_run(steps: int, poison_step: Optional[int] = None, wire: bool = False,
              poison: str = "weights", stages: int = 1, errors: Optional[List[BaseException]] = None
              ) -> Dict[str, Any]:
    """The leader and `stages` follower stages in this process over LocalChannel pairs, driven by the
    library's session/loop (and relays for stages > 1)."""
    w = init_weights(stages=stages)
    lead_end, chain = follower_chain(w, stages, poison_step, poison, wire, errors)
    loop = chain["loops"][0]
    leader = PeerSession(lead_end, "leader", "follower", lambda: done[0], pump=chain["pump"])
    mine = {"W1": w["W1"].copy(), "W3": w["W3"].copy()}
    opt = ScaledSGD(mine, ["W3", "W1"])
    done, losses = [0], []
    settings = {"in": 4, "hidden": 3, "stages": stages}
    leader.hello(settings)
    chain["sessions"][0].handshake(settings)
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
    own = [h.stage if isinstance(h, FLModelRelay) else h for h in chain["handlers"]]
    weights = dict(mine)
    for stage in own:
        weights.update(stage.weights)
    return {"losses": losses, "weights": weights, "leader_scale": opt.loss_scale,
            "follower_scale": own[-1].opt.loss_scale, "stage_scales": [stage.opt.loss_scale for stage in own],
            "loop": loop, "loops": chain["loops"], "leader": leader}
