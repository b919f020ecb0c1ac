"""FLModelFollower: a follower's whole side of the protocol from its FLModel yaml (tiny MindSpore net)."""
import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import Parameter, Tensor, nn  # noqa: E402

from mindspore_federated import FLModel, FLYamlData  # noqa: E402
from mindspore_federated.protocol import (FLModelFollower, FollowerLoop, GradientStats, Kind,  # noqa: E402
                                          LocalChannel, PeerSession, ProtocolError)
from tests.protocol.ms_optim import GlobalNormSGD  # noqa: E402

YAML = {
    "role": "follower",
    "model": {
        "train_net": {"name": "middle", "inputs": [{"name": "x", "source": "remote"}, {"name": "z", "source": "local"}],
                      "outputs": [{"name": "y", "destination": "remote"}]},
        "eval_net": {"name": "middle_eval", "inputs": [{"name": "x", "source": "remote"}, {"name": "z", "source": "local"}],
                     "outputs": [{"name": "y", "destination": "remote"}]},
    },
    "opts": [{"type": "GlobalNormSGD", "grads": [{"inputs": [{"name": "x"}, {"name": "z"}], "output": {"name": "y"},
                                                  "sens": "grad"}]}],
    "grad_scalers": [{"inputs": [{"name": "x"}], "output": {"name": "y"}, "sens": "grad"}],
}


class Middle(nn.Cell):
    """y = x @ W + z (z: the follower's own data)."""

    def __init__(self):
        super().__init__()
        self.w = Parameter(Tensor(np.arange(6, dtype=np.float32).reshape(3, 2) / 10), name="w")

    def construct(self, x, z):
        return ms.ops.matmul(x, self.w) + z


def test_a_follower_needs_only_its_network_and_yaml():
    net = Middle()
    opt = GlobalNormSGD(net.trainable_params())
    model = FLModel(FLYamlData.from_dict(YAML), net, optimizers=opt)
    z = np.ones((2, 2), np.float32)
    handler = FLModelFollower(model, [opt], local_batch=lambda step: {"z": Tensor(z * step)},
                              local_eval_batch=lambda i: {"z": Tensor(z * 10)})
    lead_end, follow_end = LocalChannel.pair()
    loop = FollowerLoop(PeerSession(follow_end, "follower", "leader", lambda: loop.completed), handler)
    leader = PeerSession(lead_end, "leader", "follower", lambda: 0, pump=loop.serve_one)
    w0 = net.w.asnumpy().copy()
    x = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    y = leader.exchange(Kind.FORWARD, 1, {"x": Tensor(x)}, Kind.FORWARD_REPLY).tensor("y").asnumpy()
    np.testing.assert_allclose(y, x @ w0 + z, rtol=1e-6)
    dy = np.array([[1, 0], [0, 1]], np.float32)
    reply = leader.exchange(Kind.BACKWARD, 1, {"grad": {"y": Tensor(dy)}}, Kind.BACKWARD_REPLY)
    np.testing.assert_allclose(reply.tensor("y", "x").asnumpy(), dy @ w0.T, rtol=1e-6)   # d(y.dy)/dx
    g = x.T @ dy
    assert reply.number("sq_norm") == pytest.approx(float((g ** 2).sum()), rel=1e-6)
    decision = leader.agree(1, GradientStats(0.0, False), reply)
    np.testing.assert_allclose(net.w.asnumpy(), w0 - 0.5 * g / float(decision.global_norm), rtol=1e-6)
    assert loop.completed == 1
    y2 = leader.exchange(Kind.EVAL, 0, {"x": Tensor(x)}, Kind.EVAL_REPLY).tensor("y").asnumpy()
    np.testing.assert_allclose(y2, x @ net.w.asnumpy() + 10 * z, rtol=1e-6)   # its own eval data
    # a FORWARD without the remote input the yaml declares: a ProtocolError, reported to the leader
    lead_end.send({"meta": {"kind": np.asarray(int(Kind.FORWARD)), "step": np.asarray(2)}})
    with pytest.raises(ProtocolError, match="tensor 'x' is missing"):
        loop.serve_one()
    abort = lead_end.recv()
    assert int(abort["meta"]["kind"]) == Kind.ABORT and b"tensor 'x' is missing" in abort["meta"]["text"].tobytes()
