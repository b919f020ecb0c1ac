"""FLModel unit behaviour: sens rules, summed terms, filters, errors, eval, loss_fn, compression."""
import logging
import re
import importlib.util
from collections import OrderedDict

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops, Tensor, Parameter

from mindspore_federated import FLModel, FLYamlData

B = 4
RNG = np.random.RandomState(0)
W0 = RNG.randn(3, 2).astype(np.float32)
BIAS0 = RNG.randn(2).astype(np.float32)
X = RNG.randn(B, 3).astype(np.float32)
V = RNG.randn(B, 3).astype(np.float32)
MASK = np.array([1, 0, 1, 1], np.int32)


class Lin(nn.Cell):
    """y = x @ w + bias; z = x * v; w itself; mask passed through."""

    def __init__(self):
        super().__init__()
        self.w = Parameter(Tensor(W0.copy()), name="w")
        self.bias = Parameter(Tensor(BIAS0.copy()), name="bias")

    def construct(self, x, v, mask):
        return ops.matmul(x, self.w) + self.bias, x * v, self.w, mask


def spec(opts=None, scalers=None):
    net = {"name": "lin",
           "inputs": [{"name": "x", "source": "remote"}, {"name": "v", "source": "local"},
                      {"name": "mask", "source": "local"}],
           "outputs": [{"name": n, "destination": "remote"} for n in ("y", "z", "w_out",
                                                                     "mask_out")]}
    return FLYamlData.from_dict({"role": "follower", "model": {"train_net": net, "eval_net": net},
                                 "opts": opts or [], "grad_scalers": scalers or []})


def batch():
    return {"x": Tensor(X), "v": Tensor(V), "mask": Tensor(MASK)}


def term(output, sens=None, inputs=("x",), params=None):
    t = {"inputs": [{"name": n} for n in inputs], "output": {"name": output}}
    if sens is not None:
        t["sens"] = sens
    if params is not None:
        t["params"] = [{"name": p} for p in params]
    return t


def test_forward_names_outputs_in_yaml_order():
    out = FLModel(spec(), Lin()).forward_one_step(batch())
    assert isinstance(out, OrderedDict) and list(out) == ["y", "z", "w_out", "mask_out"]
    np.testing.assert_allclose(out["y"].asnumpy(), X @ W0 + BIAS0, rtol=1e-6)
    np.testing.assert_array_equal(out["mask_out"].asnumpy(), MASK)


def test_grad_scaler_sens_rules():
    s = RNG.randn(B, 2).astype(np.float32)
    scalers = [term("y", inputs=("x",)),                             # no sens: ones
               term("z", 3.0, inputs=("x", "v")),                    # constant
               term("w_out", "peer", inputs=("v",)),                 # w does not depend on v
               term("mask_out", 2.0, inputs=("mask", "x"))]          # integer data
    s_w = RNG.randn(3, 2).astype(np.float32)
    model = FLModel(spec(scalers=scalers), Lin())
    result = model.backward_one_step({"v": Tensor(V), "mask": Tensor(MASK)}, {"x": Tensor(X)},
                                     sens={"peer": {"w_out": Tensor(s_w), "y": Tensor(s)}})
    assert list(result) == ["y", "z", "w_out", "mask_out"]
    assert list(result["z"]) == ["x", "v"]
    np.testing.assert_allclose(result["y"]["x"].asnumpy(), np.ones((B, 2)) @ W0.T, rtol=1e-6)
    np.testing.assert_allclose(result["z"]["x"].asnumpy(), 3.0 * V, rtol=1e-6)
    np.testing.assert_allclose(result["z"]["v"].asnumpy(), 3.0 * X, rtol=1e-6)
    np.testing.assert_array_equal(result["w_out"]["v"].asnumpy(), np.zeros_like(V))
    mask_grad = result["mask_out"]["mask"]
    assert mask_grad.shape == (B,)
    np.testing.assert_array_equal(mask_grad.asnumpy(), np.zeros(B))
    np.testing.assert_array_equal(result["mask_out"]["x"].asnumpy(), np.zeros_like(X))
    assert model.global_step == 1

    named = FLModel(spec(scalers=[term("y", "peer")]), Lin())
    result = named.backward_one_step(batch(), sens={"peer": {"y": Tensor(s)}})
    np.testing.assert_allclose(result["y"]["x"].asnumpy(), s @ W0.T, rtol=1e-5)


def test_named_sens_errors():
    model = FLModel(spec(scalers=[term("y", "peer")]), Lin())
    with pytest.raises(ValueError, match=r"grad_scalers\[0\]\.sens: tag 'peer' not in"):
        model.backward_one_step(batch(), sens={"other": {}})
    with pytest.raises(ValueError, match=r"sens\['peer'\] has no tensor for output 'y'"):
        model.backward_one_step(batch(), sens={"peer": {"z": Tensor(X)}})
    with pytest.raises(ValueError, match=r"has shape \(4, 3\), output 'y' has \(4, 2\)"):
        model.backward_one_step(batch(), sens={"peer": {"y": Tensor(X)}})
    assert model.global_step == 0


def test_summed_grad_terms_and_term_param_filters():
    """SGD(lr) on grad = sum of terms; each term with its own sens and parameter subset."""
    lr = 0.5
    s = RNG.randn(B, 2).astype(np.float32)
    opts = [{"type": "SGD", "hyper_parameters": {"learning_rate": lr},
             "grads": [term("y", "peer"),                 # -> w: x^T s, bias: sum s
                       term("w_out", 2.0),                # -> w: 2
                       term("y", None, params=["bias"]),  # -> bias only: sum of ones = B
                       term("z", 5.0)]}]                  # no parameter depends on z
    model = FLModel(spec(opts=opts), Lin())
    model.backward_one_step(batch(), sens={"peer": {"y": Tensor(s)}})
    w, bias = [p.asnumpy() for p in model.train_network.trainable_params()]
    np.testing.assert_allclose(w, W0 - lr * (X.T @ s + 2.0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias, BIAS0 - lr * (s.sum(0) + B), rtol=1e-5, atol=1e-6)


def test_params_filter_selects_and_must_match(caplog):
    opts = [{"type": "SGD", "grads": [term("y")], "params": [{"name": "bias"}],
             "hyper_parameters": {"learning_rate": 1.0}}]
    model = FLModel(spec(opts=opts), Lin())
    assert [p.name for p in model.optimizers[0].parameters] == ["bias"]
    model.backward_one_step(batch())
    w, bias = [p.asnumpy() for p in model.train_network.trainable_params()]
    np.testing.assert_array_equal(w, W0)
    np.testing.assert_allclose(bias, BIAS0 - B, rtol=1e-6)

    # a filter matching nothing is a warning (the original's own leader_top.yaml has one) ...
    opts[0]["params"] = [{"name": "bias"}, {"name": "embedding"}]
    with caplog.at_level(logging.WARNING, logger="mindspore_federated.trainer.fl_model"):
        model = FLModel(spec(opts=opts), Lin())
    assert [p.name for p in model.optimizers[0].parameters] == ["bias"]
    assert re.search(r"opts\[0\]\.params\[1\]\.name: 'embedding' matches no trainable parameter "
                     r".*parameters: w, bias", caplog.text)
    # ... but filters leaving an optimizer or a term without any parameter are an error
    opts[0]["params"] = [{"name": "embedding"}]
    with pytest.raises(ValueError, match=r"opts\[0\]\.params: none of the filters \['embedding'\]"):
        FLModel(spec(opts=opts), Lin())
    opts[0]["params"] = [{"name": "bias"}]
    opts[0]["grads"][0]["params"] = [{"name": "w"}]       # w is not among the opt's params
    with pytest.raises(ValueError, match=r"opts\[0\]\.grads\[0\]\.params: none of the filters"):
        FLModel(spec(opts=opts), Lin())
    # checked for user optimizers too
    with pytest.raises(ValueError, match=r"opts\[0\]\.grads\[0\]\.params"):
        FLModel(spec(opts=opts), Lin(), optimizers=lambda *a, **k: None)


def test_missing_input_names_it():
    model = FLModel(spec(), Lin())
    with pytest.raises(ValueError, match=r"missing input data 'mask' \(train_net 'lin' of the "
                                         r"follower party; given: v, x\)"):
        model.forward_one_step({"v": Tensor(V)}, {"x": Tensor(X)})
    with pytest.raises(ValueError, match="missing input data 'x'"):
        model.backward_one_step({"v": Tensor(V), "mask": Tensor(MASK)})


def test_output_count_mismatch():
    class Two(nn.Cell):
        def construct(self, x, v, mask):
            return x, v
    with pytest.raises(ValueError, match=r"returned 2 outputs but the yaml lists 4"):
        FLModel(spec(), Two()).forward_one_step(batch())


def test_unknown_optimizer_type_needs_user_optimizer():
    opts = [{"type": "MyAdam", "grads": [term("y")]}]
    with pytest.raises(ValueError, match=r"opts\[0\]\.type: 'MyAdam' is not an optimizer class"):
        FLModel(spec(opts=opts), Lin())
    FLModel(spec(opts=opts), Lin(), optimizers=lambda *a, **k: None)
    bad_kwargs = [{"type": "Adam", "grads": [term("y")], "hyper_parameters": {"lr": 0.1}}]
    with pytest.raises(ValueError, match=r"opts\[0\]\.hyper_parameters: nn.Adam"):
        FLModel(spec(opts=bad_kwargs), Lin())


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, *inputs, sens=None):
        self.calls.append((inputs, sens))


def test_user_optimizers_called_with_inputs_in_yaml_order_and_sens():
    opts = [{"type": "A", "grads": [term("y", "peer")]}, {"type": "B", "grads": [term("z")]}]
    one = Recorder()
    model = FLModel(spec(opts=opts), Lin(), optimizers=one)     # single object: called once
    sens = {"peer": {"y": Tensor(np.ones((B, 2), np.float32))}}
    model.backward_one_step({"mask": Tensor(MASK), "v": Tensor(V)}, {"x": Tensor(X)}, sens=sens)
    assert len(one.calls) == 1
    inputs, got = one.calls[0]
    np.testing.assert_array_equal(inputs[0].asnumpy(), X)
    np.testing.assert_array_equal(inputs[1].asnumpy(), V)
    np.testing.assert_array_equal(inputs[2].asnumpy(), MASK)
    assert got is sens

    first, second = Recorder(), Recorder()
    FLModel(spec(opts=opts), Lin(), optimizers=[first, second]).backward_one_step(
        batch(), sens=sens)
    assert len(first.calls) == len(second.calls) == 1

    # the original's convention: a list of user optimizers of any length, all called in turn
    FLModel(spec(opts=opts), Lin(), optimizers=[first]).backward_one_step(batch(), sens=sens)
    assert len(first.calls) == 2
    # a list with optimizers fed by FLModel is matched to opts by position: lengths must agree
    with pytest.raises(ValueError, match=r"optimizers: got a list of 1 but the yaml declares 2 "
                                         r"opts entries \(A, B\)"):
        FLModel(spec(opts=opts), Lin(), optimizers=[None])


def test_mixed_user_and_yaml_built_optimizers():
    opts = [{"type": "Custom", "grads": [term("y")], "params": [{"name": "w"}]},
            {"type": "SGD", "grads": [term("y")], "params": [{"name": "bias"}],
             "hyper_parameters": {"learning_rate": 1.0}}]
    rec = Recorder()
    model = FLModel(spec(opts=opts), Lin(), optimizers=[rec, None])
    model.backward_one_step(batch())
    assert len(rec.calls) == 1
    np.testing.assert_allclose(model.train_network.bias.asnumpy(), BIAS0 - B, rtol=1e-6)


def test_loss_fn_wraps_network():
    net_spec = {"name": "reg", "inputs": [{"name": "x", "source": "local"},
                                          {"name": "label", "source": "local"}],
                "outputs": [{"name": "loss", "destination": "local"}]}
    eval_spec = {"name": "reg", "inputs": [{"name": "x", "source": "local"}],
                 "outputs": [{"name": "pred", "destination": "local"}], "gt": "label"}
    yaml_data = FLYamlData.from_dict({
        "role": "leader", "model": {"train_net": net_spec, "eval_net": eval_spec},
        "opts": [{"type": "SGD", "grads": [{"inputs": [{"name": "x"}],
                                             "output": {"name": "loss"}}],
                  "hyper_parameters": {"learning_rate": 0.1}}]})
    ms.set_seed(0)
    dense = nn.Dense(3, 1)
    label = RNG.randn(B, 1).astype(np.float32)

    class Metric:
        def __init__(self):
            self.seen = []

        def update(self, *args):
            self.seen.append([a.asnumpy() for a in args])

    metric = Metric()
    model = FLModel(yaml_data, dense, loss_fn=nn.MSELoss(), metrics=metric)
    w, b = dense.weight.asnumpy().copy(), dense.bias.asnumpy().copy()
    pred = X @ w.T + b
    loss = model.forward_one_step({"x": Tensor(X), "label": Tensor(label)})["loss"]
    np.testing.assert_allclose(loss.asnumpy(), ((pred - label) ** 2).mean(), rtol=1e-5)
    model.backward_one_step({"x": Tensor(X), "label": Tensor(label)})
    grad_w = (2.0 / B * (pred - label)).T @ X
    np.testing.assert_allclose(dense.weight.asnumpy(), w - 0.1 * grad_w, rtol=1e-5, atol=1e-6)

    out = model.eval_one_step({"x": Tensor(X), "label": Tensor(label)})
    assert list(out) == ["pred"]
    assert len(metric.seen) == 1 and len(metric.seen[0]) == 2
    np.testing.assert_array_equal(metric.seen[0][1], label)
    with pytest.raises(ValueError, match="missing input data 'label'"):
        model.eval_one_step({"x": Tensor(X)})


def test_get_compress_configs():
    if importlib.util.find_spec("mindspore_federated.communication.compression") is None:
        pytest.skip("communication.compression not written yet")
    from mindspore_federated import CompressConfig
    net = {"name": "n",
           "inputs": [{"name": "hidden", "source": "remote", "compress_type": "min_max",
                       "bit_num": 4}, {"name": "ids", "source": "local"}],
           "outputs": [{"name": "act", "destination": "remote", "compress_type": "fp16"},
                       {"name": "mask", "destination": "remote", "compress_type": "bit_pack",
                        "bit_num": 1}]}
    yaml_data = FLYamlData.from_dict({"role": "follower", "opts": [],
                                      "model": {"train_net": net, "eval_net": net}})

    class Pass(nn.Cell):
        def construct(self, hidden, ids):
            return hidden, ids

    configs = FLModel(yaml_data, Pass()).get_compress_configs()
    assert set(configs) == {"hidden", "act", "mask"}
    assert configs["hidden"] == CompressConfig("min_max", 4)
    assert configs["mask"] == CompressConfig("bit_pack", 1)
    assert configs["act"].compress_type == "fp16"


@pytest.fixture
def data_parallel():
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    yield
    ms.reset_auto_parallel_context()


def test_data_parallel_requires_communication(data_parallel):
    opts = [{"type": "SGD", "grads": [term("y")], "hyper_parameters": {"learning_rate": 1.0}}]
    with pytest.raises(RuntimeError, match="DATA_PARALLEL .* not initialised"):
        FLModel(spec(opts=opts), Lin())


def test_data_parallel_reduces_gradients(data_parallel, monkeypatch):
    """No communicator on one CPU: fake the group and the reducer, check it sits before apply."""
    from mindspore import communication
    made = []

    class FakeReducer:
        def __init__(self, parameters, mean, degree, group):
            made.append((tuple(p.name for p in parameters), mean, degree, group))

        def __call__(self, grads):
            return tuple(g * 0.5 for g in grads)

    monkeypatch.setattr(communication.GlobalComm, "INITED", True)
    monkeypatch.setattr(communication, "get_group_size", lambda *a, **k: 2)
    monkeypatch.setattr(nn, "DistributedGradReducer", FakeReducer)
    opts = [{"type": "SGD", "grads": [term("y")], "params": [{"name": "bias"}],
             "hyper_parameters": {"learning_rate": 1.0}}]
    model = FLModel(spec(opts=opts), Lin())
    assert made == [(("bias",), True, 2, communication.GlobalComm.WORLD_COMM_GROUP)]
    model.backward_one_step(batch())
    np.testing.assert_allclose(model.train_network.bias.asnumpy(), BIAS0 - 0.5 * B, rtol=1e-6)
