"""FLModel differentiates for optimizers that take gradients, and reuses the forward's tape."""
import numpy as np
import mindspore as ms
import pytest
from mindspore import nn, ops

from mindspore_federated import FLModel
from tests.trainer.splitnet import (SplitParties, centralised_run, copy_weights, make_batches,
                                    make_nets, params_np, write_yaml, yaml_dicts)


class _AdamFeed:
    """A user optimizer taking gradients through ``apply_gradients`` (not an nn.Optimizer)."""

    def __init__(self, params, lr=0.01):
        self._adam = nn.Adam(params, learning_rate=lr)
        self.parameters = self._adam.parameters
        self.calls = 0

    def apply_gradients(self, grads):
        self.calls += 1
        self._adam(grads)


@pytest.mark.parametrize("kind", ["nn.Optimizer", "apply_gradients"])
def test_user_optimizers_fed_with_gradients_train_like_centralised(tmp_path, kind):
    yamls = {k: write_yaml(v, tmp_path / f"{k}.yaml")
             for k, v in yaml_dicts("UserAdam").items()}
    nets, ref_nets = make_nets(seed=1), make_nets(seed=2)
    for src, dst in zip(nets, ref_nets):
        copy_weights(src, dst)
    if kind == "nn.Optimizer":
        make = lambda net: nn.Adam(net.trainable_params(), learning_rate=0.01)  # noqa: E731
    else:
        make = lambda net: _AdamFeed(net.trainable_params())  # noqa: E731
    optimizers = dict(zip(("follower", "leader_bottom", "leader_top"), (make(n) for n in nets)))
    parties = SplitParties(yamls, nets, optimizers)
    batches = make_batches(10)
    losses = [parties.step(b) for b in batches]
    ref_losses, _ = centralised_run(ref_nets, batches)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)
    for net, ref in zip(nets, ref_nets):
        for a, b in zip(params_np(net), params_np(ref)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    if kind == "apply_gradients":
        assert all(opt.calls == 10 for opt in optimizers.values())


class _CountingNet(nn.Cell):
    """y = dense(x); counts how often its forward runs (PyNative executes construct each time)."""

    def __init__(self):
        super().__init__()
        self.dense = nn.Dense(3, 2)
        self.runs = 0

    def construct(self, x):
        self.runs += 1
        return self.dense(x)


def _counting_model(tmp_path):
    data = yaml_dicts("Adam")["follower"]
    data["model"]["train_net"]["inputs"][0]["name"] = "x"
    data["model"]["eval_net"]["inputs"][0]["name"] = "x"
    data["model"]["train_net"]["outputs"][0]["name"] = "h"
    data["model"]["eval_net"]["outputs"][0]["name"] = "h"
    data["opts"][0]["grads"][0]["inputs"] = [{"name": "x"}]
    data["opts"][0]["grads"][0]["output"] = {"name": "h"}
    data["grad_scalers"] = [{"inputs": [{"name": "x"}], "output": {"name": "h"}, "sens": "loss"}]
    net = _CountingNet()
    return net, FLModel(write_yaml(data, tmp_path / "party.yaml"), net)


def test_backward_reuses_the_forward_pass_and_matches_a_fresh_gradient(tmp_path):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net, model = _counting_model(tmp_path)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))
    sens = ms.Tensor(np.random.default_rng(1).standard_normal((4, 2)).astype(np.float32))
    w = net.dense.weight.asnumpy().copy()
    expected_dx = sens.asnumpy() @ w             # independent: d(x W^T + b)/dx applied to sens

    batch = {"x": x}
    model.forward_one_step(batch)
    runs_before = net.runs
    out = model.backward_one_step(batch, sens={"loss": {"h": sens}})
    assert net.runs == runs_before, "backward re-ran the forward although it got the same inputs"
    np.testing.assert_allclose(out["h"]["x"].asnumpy(), expected_dx, rtol=1e-6, atol=1e-6)


def test_backward_with_other_inputs_recomputes_the_forward(tmp_path):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net, model = _counting_model(tmp_path)
    x = np.ones((2, 3), np.float32)
    w = net.dense.weight.asnumpy().copy()
    model.forward_one_step({"x": ms.Tensor(x)})
    runs_before = net.runs
    out = model.backward_one_step({"x": ms.Tensor(2 * x)}, sens={"loss": {"h": ops.ones((2, 2), ms.float32)}})
    assert net.runs > runs_before
    np.testing.assert_allclose(out["h"]["x"].asnumpy(), np.ones((2, 2)) @ w, rtol=1e-6)


def test_a_single_gradient_taking_optimizer_needs_one_opts_entry(tmp_path):
    data = yaml_dicts("Adam")["leader_bottom"]
    data["opts"].append(dict(data["opts"][0]))
    yaml_data = write_yaml(data, tmp_path / "two_opts.yaml")
    net = make_nets(seed=1)[1]
    with pytest.raises(ValueError, match="pass a list"):
        FLModel(yaml_data, net, optimizers=nn.Adam(net.trainable_params()))


def test_gradient_taking_optimizer_must_update_the_partys_own_parameters(tmp_path):
    yaml_data = write_yaml(yaml_dicts("Adam")["follower"], tmp_path / "f.yaml")
    nets = make_nets(seed=1)
    with pytest.raises(ValueError, match="not trainable parameters of train_net"):
        FLModel(yaml_data, nets[0], optimizers=[nn.Adam(nets[1].trainable_params())])


def test_backward_out_of_order_falls_back_to_recomputation(tmp_path):
    """Two parties' forwards pending, backwards first-in first-out: MindSpore's tapes are LIFO,
    so the first backward must recompute; both gradients stay exact."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    net_a, model_a = _counting_model(tmp_path / "a")
    net_b, model_b = _counting_model(tmp_path / "b")
    x = ms.Tensor(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))
    sens = ms.Tensor(np.ones((4, 2), np.float32))
    w_a, w_b = net_a.dense.weight.asnumpy().copy(), net_b.dense.weight.asnumpy().copy()
    batch = {"x": x}
    model_a.forward_one_step(batch)
    model_b.forward_one_step(batch)
    out_a = model_a.backward_one_step(batch, sens={"loss": {"h": sens}})
    out_b = model_b.backward_one_step(batch, sens={"loss": {"h": sens}})
    np.testing.assert_allclose(out_a["h"]["x"].asnumpy(), sens.asnumpy() @ w_a, rtol=1e-6)
    np.testing.assert_allclose(out_b["h"]["x"].asnumpy(), sens.asnumpy() @ w_b, rtol=1e-6)
