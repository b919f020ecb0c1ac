"""Privacy as in the original: the yaml's privacy section only supplies eps; FLModel applies
LabelDP / EmbeddingDP only when the program opts in (label_dp= / embedding_dp=)."""
import numpy as np
import mindspore as ms
import pytest
from mindspore import nn, ops

from mindspore_federated import FLModel
from mindspore_federated.privacy import EmbeddingDP, LabelDP
from tests.trainer.splitnet import write_yaml


def _bottom_yaml(privacy=None, compress=None):
    out = {"name": "h", "destination": "remote", **(compress or {})}
    net = {"name": "bottom", "inputs": [{"name": "x", "source": "local"}], "outputs": [out]}
    data = {"role": "follower", "model": {"train_net": net, "eval_net": net},
            "opts": [{"type": "SGD", "grads": [{"inputs": [{"name": "x"}], "output": {"name": "h"},
                                                "sens": "top"}],
                      "hyper_parameters": {"learning_rate": 0.1}}]}
    if privacy:
        data["privacy"] = privacy
    return data


def _dense(seed):
    net = nn.Dense(4, 3)
    rng = np.random.default_rng(seed)
    net.weight.set_data(ms.Tensor(rng.standard_normal((3, 4)).astype(np.float32)))
    net.bias.set_data(ms.Tensor(rng.standard_normal(3).astype(np.float32)))
    return net


def test_embedding_dp_sends_one_bit_codes_and_trains_straight_through(tmp_path):
    x = ms.Tensor(np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32))
    sens = ms.Tensor(np.random.default_rng(1).standard_normal((6, 3)).astype(np.float32))
    plain_net, dp_net = _dense(3), _dense(3)
    plain = FLModel(write_yaml(_bottom_yaml(), tmp_path / "plain.yaml"), plain_net)
    dp_yaml = write_yaml(_bottom_yaml({"embedding_dp": {"eps": None}}), tmp_path / "dp.yaml")
    private = FLModel(dp_yaml, dp_net, embedding_dp=EmbeddingDP(dp_yaml.embedding_dp_eps))

    exact = plain.forward_one_step({"x": x})["h"].asnumpy()
    sent = private.forward_one_step({"x": x})["h"].asnumpy()
    np.testing.assert_array_equal(sent, (exact > 0).astype(np.float32))   # eps=None: 1-bit only

    batch_p, batch_d = {"x": x}, {"x": x}
    plain.backward_one_step(batch_p, sens={"top": {"h": sens}})
    private.backward_one_step(batch_d, sens={"top": {"h": sens}})
    np.testing.assert_allclose(dp_net.weight.asnumpy(), plain_net.weight.asnumpy(), rtol=1e-6)


def test_embedding_dp_and_min_max_on_the_same_tensor_are_refused(tmp_path):
    data = _bottom_yaml({"embedding_dp": {"eps": 1.0}}, {"compress_type": "min_max", "bit_num": 4})
    yaml_data = write_yaml(data, tmp_path / "bad.yaml")
    FLModel(yaml_data, _dense(0))        # the yaml alone applies nothing, so nothing conflicts
    with pytest.raises(ValueError, match="'h'.*min_max"):
        FLModel(yaml_data, _dense(0), embedding_dp=EmbeddingDP(1.0))


def test_privacy_in_yaml_is_inert_unless_applied(tmp_path):
    """The original's shipped yamls carry a privacy section; their programs apply DP only behind
    --label_dp / --embedding_dp. FLModel alone must leave labels and activations exact."""
    bottom = FLModel(write_yaml(_bottom_yaml({"embedding_dp": {"eps": 1.0}}), tmp_path / "b.yaml"),
                     _dense(3))
    x = ms.Tensor(np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32))
    sent = bottom.forward_one_step({"x": x})["h"].asnumpy()
    np.testing.assert_allclose(sent, _dense(3)(x).asnumpy(), rtol=1e-6)
    top = FLModel(write_yaml(_top_yaml(0.0), tmp_path / "top.yaml"), _Top())
    labels = np.eye(4, dtype=np.float32)[np.arange(40) % 4]
    seen = top.forward_one_step({"y": ms.Tensor(labels)}, {"h": ms.Tensor(np.zeros((40, 3), np.float32))})
    np.testing.assert_array_equal(seen["seen"].asnumpy(), labels)


class _Top(nn.Cell):
    """Cross-entropy on one-hot labels; also returns the labels it saw."""

    def __init__(self):
        super().__init__()
        self.dense = nn.Dense(3, 4)

    def construct(self, h, y):
        loss = ops.mean(-ops.sum(y * ops.log_softmax(self.dense(h), -1), -1))
        return loss, y


def _top_yaml(eps, gt="y"):
    net = {"name": "top", "inputs": [{"name": "h", "source": "remote"}, {"name": "y", "source": "local"}],
           "outputs": [{"name": "loss", "destination": "local"}, {"name": "seen", "destination": "local"}]}
    eval_net = dict(net, gt=gt) if gt else net
    return {"role": "leader", "model": {"train_net": net, "eval_net": eval_net},
            "opts": [{"type": "SGD", "grads": [{"inputs": [{"name": "h"}], "output": {"name": "loss"}}],
                      "hyper_parameters": {"learning_rate": 0.1}}],
            "privacy": {"label_dp": {"eps": eps}}}


def test_label_dp_randomises_labels_once_per_batch(tmp_path):
    yaml_data = write_yaml(_top_yaml(0.0), tmp_path / "top.yaml")
    model = FLModel(yaml_data, _Top(), label_dp=LabelDP(yaml_data.label_dp_eps))
    labels = np.eye(4, dtype=np.float32)[np.arange(400) % 4]
    y = ms.Tensor(labels)
    h = ms.Tensor(np.zeros((400, 3), np.float32))
    seen = model.forward_one_step({"y": y}, {"h": h})["seen"].asnumpy()
    assert (seen.argmax(1) != labels.argmax(1)).mean() > 0.5      # eps=0: keep prob 1/4
    assert set(np.unique(seen.sum(1))) == {1.0}                    # still one-hot
    again = model.forward_one_step({"y": y}, {"h": h})["seen"].asnumpy()
    np.testing.assert_array_equal(seen, again)                     # same batch, same noise


def test_label_dp_needs_gt_to_name_a_train_input(tmp_path):
    with pytest.raises(ValueError, match="label_dp: model.eval_net.gt"):
        FLModel(write_yaml(_top_yaml(1.0, gt=None), tmp_path / "top.yaml"), _Top(), label_dp=LabelDP(1.0))


def test_embedding_dp_leaves_passed_through_inputs_and_covers_eval(tmp_path):
    class _PassMask(nn.Cell):
        def __init__(self):
            super().__init__()
            self.dense = nn.Dense(4, 3)

        def construct(self, x, mask):
            return self.dense(x), mask

    net = {"name": "bottom", "inputs": [{"name": "x", "source": "local"}, {"name": "mask", "source": "local"}],
           "outputs": [{"name": "h", "destination": "remote"}, {"name": "mask", "destination": "remote"}]}
    data = {"role": "leader", "model": {"train_net": net, "eval_net": net},
            "opts": [{"type": "SGD", "grads": [{"inputs": [{"name": "x"}], "output": {"name": "h"},
                                                "sens": "top"}]}],
            "privacy": {"embedding_dp": {}}}
    model = FLModel(write_yaml(data, tmp_path / "mask.yaml"), _PassMask(), embedding_dp=EmbeddingDP())
    x = ms.Tensor(np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32))
    mask = ms.Tensor(np.full((5, 2), 0.25, np.float32))
    for out in (model.forward_one_step({"x": x, "mask": mask}), model.eval_one_step({"x": x, "mask": mask})):
        assert set(np.unique(out["h"].asnumpy())) <= {0.0, 1.0}
        np.testing.assert_array_equal(out["mask"].asnumpy(), mask.asnumpy())


def test_embedding_dp_never_perturbs_a_returned_parameter(tmp_path):
    """A tied weight table returned as a remote output (the original's PanGu embedding.yaml) is a
    weight, not an activation: EmbeddingDP leaves it, and the Parameter itself, exact."""
    class _Tied(nn.Cell):
        def __init__(self):
            super().__init__()
            self.table = ms.Parameter(ms.Tensor(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)),
                                      name="table")

        def construct(self, x):
            return ops.matmul(x, self.table), self.table

    net = {"name": "tied", "inputs": [{"name": "x", "source": "local"}],
           "outputs": [{"name": "h", "destination": "remote"}, {"name": "table", "destination": "remote"}]}
    data = {"role": "leader", "model": {"train_net": net, "eval_net": net},
            "opts": [{"type": "SGD", "grads": [{"inputs": [{"name": "x"}], "output": {"name": "h"}, "sens": "top"}],
                      "hyper_parameters": {"learning_rate": 0.1}}]}
    cell = _Tied()
    before = cell.table.asnumpy().copy()
    model = FLModel(write_yaml(data, tmp_path / "tied.yaml"), cell, embedding_dp=EmbeddingDP(0.5))
    x = ms.Tensor(np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32))
    for out in (model.forward_one_step({"x": x}), model.eval_one_step({"x": x})):
        assert set(np.unique(out["h"].asnumpy())) <= {0.0, 1.0}
        np.testing.assert_array_equal(out["table"].asnumpy(), before)
    np.testing.assert_array_equal(cell.table.asnumpy(), before)
