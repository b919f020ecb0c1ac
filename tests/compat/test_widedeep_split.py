"""A program written for the original MindSpore Federated's vertical API, run unchanged.

Four sub-networks like the original's Wide&Deep example: a leader bottom and a follower bottom
(each: wide and deep embeddings of its own fields plus an L2 term on its deep table) and a leader
top whose grad scaler returns the gradients of all four embeddings in one ``sens`` dict, which the
program slices between the two bottoms. The program uses only the original's import paths and call
pattern; its per-step losses must equal an independent centralised computation (one network, one
loss, MindSpore's autodiff) with the same initial weights, data and optimizers.
"""
from collections import OrderedDict

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn, ops, Parameter, Tensor

from mindspore_federated import FLModel, FLYamlData, vfl_utils
from mindspore_federated.privacy import LabelDP

B, VOCAB, EMB, LEAD_FIELDS, FOLLOW_FIELDS, L2 = 8, 30, 3, 4, 3, 1e-3
LR_WIDE, LR_DEEP, SCALE = 0.05, 0.01, 1024.0


class Bottom(nn.Cell):
    """Wide (one weight per id) and deep (embedding -> dense) parts of one party's fields."""

    def __init__(self, fields: int, seed: int):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.wide_table = Parameter(Tensor(rng.normal(0, 0.1, (VOCAB, 1)).astype(np.float32)), name="wide_table")
        self.deep_table = Parameter(Tensor(rng.normal(0, 0.1, (VOCAB, EMB)).astype(np.float32)), name="deep_table")
        self.dense = nn.Dense(fields * EMB, 1, weight_init=Tensor(rng.normal(0, 0.3, (1, fields * EMB)).astype(np.float32)),
                              bias_init="zeros")

    def construct(self, ids, weights):
        wide = (ops.gather(self.wide_table, ids, 0).squeeze(-1) * weights).sum(1, keepdims=True)
        deep = ops.gather(self.deep_table, ids, 0) * weights.expand_dims(-1)
        deep = self.dense(deep.reshape((deep.shape[0], -1)))
        return wide, deep


class BottomLoss(nn.Cell):
    """Outputs as the original's BottomLossNet: wide, deep, and the L2 term of the deep table."""

    def __init__(self, net: Bottom):
        super().__init__(auto_prefix=False)
        self.net = net

    def construct(self, ids, weights):
        wide, deep = self.net(ids, weights)
        return wide, deep, (self.net.deep_table ** 2).mean() / 2 * L2


class Top(nn.Cell):
    def __init__(self):
        super().__init__()
        self.dense = nn.Dense(4, 1, weight_init=Tensor(np.array([[0.5, -0.4, 0.3, 0.2]], np.float32)),
                              bias_init="zeros")

    def construct(self, lw, ld, fw, fd):
        return self.dense(ops.concat((lw, ld, fw, fd), 1))


class TopLoss(nn.Cell):
    def __init__(self, net: Top):
        super().__init__()
        self.net = net
        self.loss = ops.SigmoidCrossEntropyWithLogits()

    def construct(self, lw, ld, fw, fd, label):
        out = self.net(lw, ld, fw, fd)
        return out, self.loss(out, label).mean()


class TopEval(nn.Cell):
    def __init__(self, net: Top):
        super().__init__(auto_prefix=False)
        self.net = net

    def construct(self, lw, ld, fw, fd):
        logits = self.net(lw, ld, fw, fd)
        return logits, ops.sigmoid(logits)


# --- yamls in the original's style: comments, 1.e-x floats, sens tags, loss_scale 1024 ------
def bottom_yaml(role: str, prefix: str, ids: str, wts: str) -> str:
    return f"""role: {role}
model: # the bottom net of this party
  train_net:
    name: {prefix}_bottom_net
    inputs:
      - name: {ids}
        source: local
      - name: {wts}
        source: local
    outputs:
      - name: {prefix}_wide
        destination: remote
      - name: {prefix}_deep
        destination: remote
      - name: {prefix}_l2
        destination: local
  eval_net:
    name: {prefix}_bottom_eval
    inputs:
      - name: {ids}
        source: local
      - name: {wts}
        source: local
    outputs:
      - name: {prefix}_wide
        destination: remote
      - name: {prefix}_deep
        destination: remote
opts:
  - type: SGD
    grads:
      - inputs:
          - name: {ids}
          - name: {wts}
        output:
          name: {prefix}_wide
        sens: loss
    params:
      - name: wide
    hyper_parameters:
      learning_rate: 5.e-2
      loss_scale: 1024.0
  - type: Adam
    grads:
      - inputs:
          - name: {ids}
          - name: {wts}
        output:
          name: {prefix}_deep
        sens: loss
      - inputs:
          - name: {ids}
          - name: {wts}
        output:
          name: {prefix}_l2
        sens: 1024.0
    params:
      - name: deep
      - name: dense
    hyper_parameters:
      learning_rate: 1.e-2
      eps: 1.e-8
      loss_scale: 1024.0
dataset:
  name: toy_ctr
  features:
    - {ids}
    - {wts}
hyper_parameters:
  epochs: 1
  batch_size: {B}
  is_eval: True
ckpt_path: CKPT"""


TOP_YAML = """role: leader
model:
  train_net:
    name: top_loss_net
    inputs:
      - name: leader_wide
        source: local
      - name: leader_deep
        source: local
      - name: follower_wide
        source: remote
      - name: follower_deep
        source: remote
      - name: label
        source: local
    outputs:
      - name: out
        destination: local
      - name: loss
        destination: local
  eval_net:
    name: top_eval_net
    inputs:
      - name: leader_wide
        source: local
      - name: leader_deep
        source: local
      - name: follower_wide
        source: remote
      - name: follower_deep
        source: remote
    outputs:
      - name: logits
        destination: local
      - name: probs
        destination: local
    gt: label
opts:
  - type: Adam
    grads:
      - inputs:
          - name: leader_wide
          - name: leader_deep
          - name: follower_wide
          - name: follower_deep
          - name: label
        output:
          name: loss
        sens: 1024.0
    params:
      - name: deep   # matches nothing in the top net: the original's own top yaml has this
      - name: dense
    hyper_parameters:
      learning_rate: 1.e-2
      eps: 1.e-8
      loss_scale: 1024.0
grad_scalers:
  - inputs:
      - name: leader_wide
      - name: leader_deep
      - name: follower_wide
      - name: follower_deep
    output:
      name: loss
    sens: 1024.0
ckpt_path: CKPT
privacy:
  label_dp:
    eps: 1.0"""


class CustomAdam:
    """A user optimizer written like the original's PanGu one: it reads its terms from
    ``yaml_data.opts[0]['grads']`` and the outputs from ``yaml_data.train_net['outputs']``, and
    FLModel calls it as ``opt(*inputs, sens=sens)``."""

    def __init__(self, net, optimizer, yaml_data):
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.terms = []
        outputs = [o['name'] for o in yaml_data.train_net['outputs']]
        for grad_yaml in yaml_data.opts[0]['grads']:
            index = outputs.index(grad_yaml['output']['name'])
            cell = vfl_utils.IthOutputCellInTuple(net, index)
            grad_fn = ops.GradOperation(get_by_list=True, sens_param=True)(cell, self.weights)
            self.terms.append((grad_yaml, cell, grad_fn))

    def __call__(self, *inputs, sens=None):
        total = None
        for grad_yaml, cell, grad_fn in self.terms:
            if isinstance(grad_yaml['sens'], (int, float)):
                value = ops.full_like(cell(*inputs), grad_yaml['sens'])
            else:
                value = sens[grad_yaml['sens']][grad_yaml['output']['name']]
            grads = grad_fn(*inputs, value)
            total = grads if total is None else tuple(a + b for a, b in zip(total, grads))
        self.optimizer(total)


class Probabilities:
    """A metric in the original's style: update(*eval_outputs, label)."""

    def __init__(self):
        self.seen = []

    def update(self, *inputs):
        self.seen.append((inputs[1].asnumpy(), inputs[2].asnumpy()))


def make_data(steps: int, seed: int = 5):
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(steps):
        batches.append({
            "id_hldr": Tensor(rng.integers(0, VOCAB, (B, LEAD_FIELDS)).astype(np.int32)),
            "wt_hldr": Tensor(rng.random((B, LEAD_FIELDS)).astype(np.float32)),
            "id_hldr0": Tensor(rng.integers(0, VOCAB, (B, FOLLOW_FIELDS)).astype(np.int32)),
            "wt_hldr0": Tensor(rng.random((B, FOLLOW_FIELDS)).astype(np.float32)),
            "label": Tensor((rng.random((B, 1)) > 0.5).astype(np.float32)),
        })
    return batches


def write_yamls(tmp_path):
    ckpt = str(tmp_path / "ckpt")
    texts = {"leader_bottom": bottom_yaml("leader", "leader", "id_hldr", "wt_hldr"),
             "follower_bottom": bottom_yaml("follower", "follower", "id_hldr0", "wt_hldr0"),
             "leader_top": TOP_YAML}
    paths = {}
    for name, text in texts.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text.replace("CKPT", ckpt))  # no trailing newline, like some originals
        paths[name] = str(path)
    return paths


def original_program(paths, batches, custom_follower: bool):
    """The original's run_vfl_train_local.py loop, reduced to the calls that matter."""
    leader_top_yaml_data = FLYamlData(paths["leader_top"])
    follower_bottom_yaml_data = FLYamlData(paths["follower_bottom"])
    leader_bottom_yaml_data = FLYamlData(paths["leader_bottom"])
    top_base = Top()
    leader_top_fl_model = FLModel(yaml_data=leader_top_yaml_data, network=TopLoss(top_base),
                                  metrics=Probabilities(), eval_network=TopEval(top_base))
    ldp = None
    if hasattr(leader_top_yaml_data, 'label_dp_eps') and False:  # the program's --label_dp False
        ldp = LabelDP(leader_top_yaml_data.label_dp_eps)
    follower_net = BottomLoss(Bottom(FOLLOW_FIELDS, 2))
    optimizers = None
    if custom_follower:
        adam = nn.Adam([p for p in follower_net.trainable_params() if "wide" not in p.name],
                       learning_rate=LR_DEEP, eps=1e-8, loss_scale=SCALE)
        sgd = nn.SGD([p for p in follower_net.trainable_params() if "wide" in p.name],
                     learning_rate=LR_WIDE, loss_scale=SCALE)
        wide_only = FLYamlData.from_dict(dict(follower_bottom_yaml_data.yaml_data,
                                              opts=[follower_bottom_yaml_data.yaml_data["opts"][0]]))
        deep_only = FLYamlData.from_dict(dict(follower_bottom_yaml_data.yaml_data,
                                              opts=[follower_bottom_yaml_data.yaml_data["opts"][1]]))
        optimizers = [CustomAdam(follower_net, sgd, wide_only), CustomAdam(follower_net, adam, deep_only)]
    follower_bottom_fl_model = FLModel(yaml_data=follower_bottom_yaml_data, network=follower_net,
                                       optimizers=optimizers)
    leader_bottom_fl_model = FLModel(yaml_data=leader_bottom_yaml_data,
                                     network=BottomLoss(Bottom(LEAD_FIELDS, 1)))
    losses = []
    for item in batches:
        item = dict(item)
        if ldp:
            item['label'] = ldp(item['label'])
        follower_embedding = follower_bottom_fl_model.forward_one_step(item)
        leader_embedding = leader_bottom_fl_model.forward_one_step(item)
        item.update(leader_embedding)
        leader_out = leader_top_fl_model.forward_one_step(item, follower_embedding)
        scale = leader_top_fl_model.backward_one_step(item, follower_embedding)
        scale_name = 'loss'
        leader_scale = {scale_name: OrderedDict(list(scale[scale_name].items())[:2])}
        follower_scale = {scale_name: OrderedDict(list(scale[scale_name].items())[2:])}
        leader_bottom_fl_model.backward_one_step(item, sens=leader_scale)
        follower_bottom_fl_model.backward_one_step(item, sens=follower_scale)
        losses.append(float(leader_out['loss'].asnumpy()))
    # eval as the original: forward the bottoms, merge, eval_one_step on the top
    eval_item = dict(batches[0])
    embedding = follower_bottom_fl_model.forward_one_step(eval_item)
    embedding.update(leader_bottom_fl_model.forward_one_step(eval_item))
    eval_out = leader_top_fl_model.eval_one_step(eval_item, embedding)
    models = (leader_bottom_fl_model, follower_bottom_fl_model, leader_top_fl_model)
    return losses, eval_out, models


class Whole(nn.Cell):
    """The uncut network: one loss = top loss + both L2 terms."""

    def __init__(self):
        super().__init__()
        self.lead, self.follow, self.top = Bottom(LEAD_FIELDS, 1), Bottom(FOLLOW_FIELDS, 2), Top()
        self.loss = ops.SigmoidCrossEntropyWithLogits()

    def construct(self, id_l, wt_l, id_f, wt_f, label):
        lw, ld = self.lead(id_l, wt_l)
        fw, fd = self.follow(id_f, wt_f)
        top_loss = self.loss(self.top(lw, ld, fw, fd), label).mean()
        l2 = ((self.lead.deep_table ** 2).mean() + (self.follow.deep_table ** 2).mean()) / 2 * L2
        return top_loss + l2, top_loss


def centralised(batches):
    whole = Whole()
    params = whole.trainable_params()
    wide = [p for p in params if "wide" in p.name]
    bottom_deep = [p for p in params if "wide" not in p.name and not p.name.startswith("top.")]
    top = [p for p in params if p.name.startswith("top.")]
    opts = [(nn.SGD(wide, learning_rate=LR_WIDE), wide),
            (nn.Adam(bottom_deep[:3], learning_rate=LR_DEEP, eps=1e-8), bottom_deep[:3]),
            (nn.Adam(bottom_deep[3:], learning_rate=LR_DEEP, eps=1e-8), bottom_deep[3:]),
            (nn.Adam(top, learning_rate=LR_DEEP, eps=1e-8), top)]
    grad_fn = ms.value_and_grad(whole, None, params, has_aux=True)
    index = {id(p): i for i, p in enumerate(params)}
    losses = []
    for b in batches:
        (_, top_loss), grads = grad_fn(b["id_hldr"], b["wt_hldr"], b["id_hldr0"], b["wt_hldr0"], b["label"])
        for opt, group in opts:
            opt(tuple(grads[index[id(p)]] for p in group))
        losses.append(float(top_loss.asnumpy()))
    return losses


@pytest.mark.parametrize("custom_follower", [False, True], ids=["yaml_optimizers", "custom_optimizer"])
def test_original_widedeep_program_matches_centralised(tmp_path, custom_follower, caplog):
    batches = make_data(4)
    with caplog.at_level("WARNING"):
        losses, eval_out, models = original_program(write_yamls(tmp_path), batches, custom_follower)
    assert "opts[0].params[0].name: 'deep' matches no trainable parameter" in caplog.text
    expected = centralised(batches)
    np.testing.assert_allclose(losses, expected, rtol=2e-5, atol=1e-7)
    assert expected[-1] < expected[0]                          # it did train
    assert list(eval_out) == ["logits", "probs"]
    # checkpoints the original way: save, then load_ckpt() with its default ('eval')
    for model in models:
        model.save_ckpt()
        model.load_ckpt()
        assert model.global_step == len(batches)


_GRAPH_MODE_RUN = """
import json, sys, pathlib
import mindspore as ms
ms.set_context(mode=ms.GRAPH_MODE)   # what the original's programs set
from tests.compat.test_widedeep_split import make_data, original_program, write_yamls
losses, _, _ = original_program(write_yamls(pathlib.Path(sys.argv[1])), make_data(4), False)
# the original's per-term objects, against their closed-form gradients, in GRAPH_MODE too
from tests.trainer import test_vfl_optim as t
t.test_grad_operation_tag_and_constant_sens()
t.test_grad_scaler_returns_listed_inputs_in_order()
t.test_optimizer_sums_its_terms_and_applies_them(pathlib.Path(sys.argv[1]))
from tests.trainer import test_privacy_integration as p
p.test_embedding_dp_never_perturbs_a_returned_parameter(pathlib.Path(sys.argv[1]))
print(json.dumps(losses))
"""


def test_original_program_in_graph_mode(tmp_path):
    """The original's programs run in GRAPH_MODE: same losses there, through backward graphs
    compiled once; the per-term objects and EmbeddingDP's sparing of a returned weight table
    hold there too (a fresh process: the mode is process-wide)."""
    import json
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root)
    done = subprocess.run([sys.executable, "-c", _GRAPH_MODE_RUN, str(tmp_path)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    losses = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(losses, centralised(make_data(4)), rtol=2e-5, atol=1e-7)
