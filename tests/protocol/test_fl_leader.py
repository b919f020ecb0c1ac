"""FLModelLeader + FLModelFollower: a three-part split (leader bottom | follower middle | leader top)
driven entirely from FLModel yamls, equal to the whole network trained in one piece."""
import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import Parameter, Tensor, nn, ops  # noqa: E402

from mindspore_federated import FLModel, FLYamlData  # noqa: E402
from mindspore_federated.protocol import (FLModelFollower, FLModelLeader, FollowerLoop,  # noqa: E402
                                          LocalChannel, PeerSession)
from tests.protocol.ms_optim import GlobalNormSGD  # noqa: E402

LR = 0.5


def _net(name, inputs, outputs):
    return {"name": name, "inputs": inputs, "outputs": outputs}


BOTTOM = {"role": "leader", "model": {
    "train_net": _net("bottom", [{"name": "x", "source": "local"}], [{"name": "a", "destination": "remote"}]),
    "eval_net": _net("bottom_eval", [{"name": "x", "source": "local"}], [{"name": "a", "destination": "remote"}])},
    "opts": [{"type": "SGD", "grads": [{"inputs": [{"name": "x"}], "output": {"name": "a"}, "sens": "h"}]}]}
MIDDLE = {"role": "follower", "model": {
    "train_net": _net("middle", [{"name": "a", "source": "remote"}], [{"name": "h", "destination": "remote"}]),
    "eval_net": _net("middle_eval", [{"name": "a", "source": "remote"}], [{"name": "h", "destination": "remote"}])},
    "opts": [{"type": "SGD", "grads": [{"inputs": [{"name": "a"}], "output": {"name": "h"}, "sens": "loss"}]}],
    "grad_scalers": [{"inputs": [{"name": "a"}], "output": {"name": "h"}, "sens": "loss"}]}
TOP = {"role": "leader", "model": {
    "train_net": _net("top", [{"name": "h", "source": "remote"}, {"name": "t", "source": "local"}],
                      [{"name": "loss", "destination": "local"}]),
    "eval_net": _net("top_eval", [{"name": "h", "source": "remote"}, {"name": "t", "source": "local"}],
                     [{"name": "loss", "destination": "local"}])},
    "opts": [{"type": "SGD", "grads": [{"inputs": [{"name": "h"}, {"name": "t"}], "output": {"name": "loss"}}]}],
    "grad_scalers": [{"inputs": [{"name": "h"}], "output": {"name": "loss"}}]}


class Linear(nn.Cell):
    def __init__(self, name, rows, cols, seed, act=False):
        super().__init__()
        rng = np.random.RandomState(seed)
        self.w = Parameter(Tensor(rng.randn(rows, cols).astype(np.float32) / 2), name=name)
        self.act = act

    def construct(self, x):
        y = ops.matmul(x, self.w)
        return ops.tanh(y) if self.act else y


class Loss(nn.Cell):
    def __init__(self):
        super().__init__()
        self.head = Linear("w3", 3, 1, 3)

    def construct(self, h, t):
        return ops.reduce_mean((self.head(h) - t) ** 2)


def _data(step):
    rng = np.random.RandomState(step)
    x = rng.randn(8, 4).astype(np.float32)
    return x, x[:, :1] * 0.5


def _reference(steps):
    rng = [np.random.RandomState(s) for s in (1, 2, 3)]
    w1, w2, w3 = (r.randn(*shape).astype(np.float64) / 2 for r, shape in zip(rng, ((4, 3), (3, 3), (3, 1))))
    losses = []
    for step in range(1, steps + 1):
        x, t = _data(step)
        a = x @ w1
        h = np.tanh(a @ w2)
        y = h @ w3
        losses.append(np.mean((y - t) ** 2))
        dy = 2 * (y - t) / y.size
        g3, dh = h.T @ dy, dy @ w3.T
        dz = dh * (1 - h ** 2)
        g2, da = a.T @ dz, dz @ w2.T
        g1 = x.T @ da
        factor = 1.0 / max(np.sqrt(sum((g ** 2).sum() for g in (g1, g2, g3))), 1.0)
        w1, w2, w3 = w1 - LR * factor * g1, w2 - LR * factor * g2, w3 - LR * factor * g3
    return losses


def test_three_part_split_from_yamls_equals_the_whole_network():
    bottom_net, middle_net, top_net = Linear("w1", 4, 3, 1), Linear("w2", 3, 3, 2, act=True), Loss()
    opts = [GlobalNormSGD(n.trainable_params(), LR) for n in (bottom_net, middle_net, top_net)]
    bottom = FLModel(FLYamlData.from_dict(BOTTOM), bottom_net, optimizers=opts[0])
    middle = FLModel(FLYamlData.from_dict(MIDDLE), middle_net, optimizers=opts[1])
    top = FLModel(FLYamlData.from_dict(TOP), top_net, optimizers=opts[2])
    lead_end, follow_end = LocalChannel.pair(wire=True)     # through the codec, as over the network
    loop = FollowerLoop(PeerSession(follow_end, "follower", "leader", lambda: loop.completed),
                        FLModelFollower(middle, [opts[1]]))
    done = [0]
    driver = FLModelLeader(PeerSession(lead_end, "leader", "follower", lambda: done[0], pump=loop.serve_one),
                           bottom, top, [opts[2], opts[0]])
    losses = []
    for step in range(1, 6):
        x, t = _data(step)
        outputs, decision = driver.train_step({"x": Tensor(x), "t": Tensor(t)}, step)
        losses.append(float(outputs["loss"].asnumpy()))
        assert not decision.overflow
        done[0] = step
    np.testing.assert_allclose(losses, _reference(5), rtol=1e-5)
    x, t = _data(99)
    assert float(driver.eval_step({"x": Tensor(x), "t": Tensor(t)}, 0)["loss"].asnumpy()) > 0
