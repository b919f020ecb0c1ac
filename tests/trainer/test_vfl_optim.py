"""PartyGradOperation / PartyGradScaler / PartyOptimizer (the original's trainer.vfl_optim)
against closed-form gradients of a linear network computed with numpy."""
from collections import OrderedDict

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn, ops, Parameter, Tensor

from mindspore_federated import FLYamlData, PartyGradOperation, PartyGradScaler, PartyOptimizer

RNG = np.random.default_rng(4)
X = RNG.standard_normal((5, 3)).astype(np.float32)
V = RNG.standard_normal((5, 2)).astype(np.float32)
W0 = RNG.standard_normal((2, 3)).astype(np.float32)
B0 = RNG.standard_normal(2).astype(np.float32)
S = RNG.standard_normal((5, 2)).astype(np.float32)      # the peer's sensitivity on y
IDS = np.arange(5, dtype=np.int32)


class Linear(nn.Cell):
    """y = x W^T + b (sent to the peer); s = sum(y * v) (a local loss term); ids passed through."""

    def __init__(self):
        super().__init__()
        self.w = Parameter(Tensor(W0), name="w")
        self.b = Parameter(Tensor(B0), name="b")

    def construct(self, x, v, ids):
        y = ops.matmul(x, self.w.T) + self.b
        return y, (y * v).sum(), ids


NET_YAML = {"name": "lin", "inputs": [{"name": "x", "source": "local"}, {"name": "v", "source": "local"},
                                      {"name": "ids", "source": "local"}],
            "outputs": [{"name": "y", "destination": "remote"}, {"name": "s", "destination": "local"},
                        {"name": "ids", "destination": "remote"}]}
ALL_INPUTS = [{"name": "x"}, {"name": "v"}, {"name": "ids"}]
LOCAL = {"x": Tensor(X), "ids": Tensor(IDS)}
REMOTE = {"v": Tensor(V)}
SENS = {"top": {"y": Tensor(S)}}


def test_grad_operation_tag_and_constant_sens():
    net = Linear()
    params = [net.w, net.b]
    tagged = PartyGradOperation({"inputs": ALL_INPUTS, "output": {"name": "y"}, "sens": "top"}, net, NET_YAML, params)
    gw, gb = tagged(LOCAL, REMOTE, SENS)
    np.testing.assert_allclose(gw.asnumpy(), S.T @ X, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gb.asnumpy(), S.sum(0), rtol=1e-5, atol=1e-6)
    constant = PartyGradOperation({"inputs": ALL_INPUTS, "output": {"name": "s"}, "sens": 3.0,
                                   "params": [{"name": "b"}]}, net, NET_YAML, params)
    (gb,) = constant(LOCAL, REMOTE)                     # the term's own params filter: b only
    np.testing.assert_allclose(gb.asnumpy(), 3.0 * V.sum(0), rtol=1e-5)
    plain = PartyGradOperation({"inputs": ALL_INPUTS, "output": {"name": "s"}}, net, NET_YAML, [net.w])
    np.testing.assert_allclose(plain(LOCAL, REMOTE)[0].asnumpy(), V.T @ X, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="tag 'top' not in the received sens dict"):
        tagged(LOCAL, REMOTE, {})


def test_grad_scaler_returns_listed_inputs_in_order():
    net = Linear()
    scaler = PartyGradScaler({"inputs": [{"name": "ids"}, {"name": "x"}], "output": {"name": "y"}, "sens": "top"},
                             net, NET_YAML)
    assert scaler.grad_scale_name() == "y"
    out = scaler(LOCAL, REMOTE, SENS)
    assert isinstance(out, OrderedDict) and list(out) == ["ids", "x"]
    np.testing.assert_allclose(out["x"].asnumpy(), S @ W0, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["ids"].asnumpy(), np.zeros(5))      # integer input: no gradient
    with pytest.raises(ValueError, match="missing input data 'v'"):
        scaler(LOCAL, None, SENS)


def test_optimizer_sums_its_terms_and_applies_them(tmp_path):
    optim_yaml = {"type": "SGD", "hyper_parameters": {"learning_rate": 0.1, "loss_scale": 4.0},
                  "grads": [{"inputs": ALL_INPUTS, "output": {"name": "y"}, "sens": "top"},
                            {"inputs": ALL_INPUTS, "output": {"name": "s"}, "sens": 4.0}]}
    net = Linear()
    opt = PartyOptimizer(optim_yaml, net, NET_YAML)
    assert opt.type == "SGD" and isinstance(opt.optimizer, nn.SGD) and len(opt.grad_list) == 2
    opt(LOCAL, REMOTE, {"top": {"y": Tensor(4.0 * S)}})   # peer sens scaled like the loss scale
    grad_w = S.T @ X + V.T @ X
    np.testing.assert_allclose(net.w.asnumpy(), W0 - 0.1 * grad_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.b.asnumpy(), B0 - 0.1 * (S.sum(0) + V.sum(0)), rtol=1e-5, atol=1e-6)
    assert "params" not in optim_yaml["hyper_parameters"]    # the yaml is not mutated (the original did)

    # the same objects built from FLYamlData's items, as FLModel's yaml_data exposes them
    data = FLYamlData.from_dict({"role": "follower", "model": {"train_net": NET_YAML, "eval_net": NET_YAML},
                                 "opts": [dict(optim_yaml, params=[{"name": "w"}])]})
    net2 = Linear()
    opt2 = PartyOptimizer(data.opts[0], net2, data.train_net)
    opt2(LOCAL, REMOTE, {"top": {"y": Tensor(4.0 * S)}})
    np.testing.assert_allclose(net2.w.asnumpy(), net.w.asnumpy(), rtol=1e-6)
    np.testing.assert_array_equal(net2.b.asnumpy(), B0)                  # filtered out
    with pytest.raises(ValueError, match="'NoSuchOpt' is not an optimizer class"):
        PartyOptimizer(dict(optim_yaml, type="NoSuchOpt"), Linear(), NET_YAML)
