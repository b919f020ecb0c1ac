"""Yamls in each style the original MindSpore Federated shipped load here, and read the same.

The yamls below are written for these tests in the original's styles: a two-party classifier
(plain gradients, no sens on the leader, a tag on the follower), a Wide&Deep bottom/top/TEE split
(constant and tagged sens, min_max on remote tensors, a label_dp section, a params filter that
matches nothing, no trailing newline), and a three-part language model in a one-process and an
HTTPS flavour (tensors that are both input and output, two grad scalers, bit_pack on a mask,
embedding_dp, ``no_compress``), plus an older yaml with keys the original ignored.
"""
import logging

import pytest

from mindspore_federated import FLYamlData

CLASSIFIER_LEADER = """role: leader
model: # two-party classifier, leader side
  train_net:
    name: cls_leader_loss
    inputs:
      - name: features
        source: remote
      - name: target
        source: local
    outputs:
      - name: ce_loss
        destination: local
  eval_net:
    name: cls_leader_eval
    inputs:
      - name: features
        source: remote
      - name: target
        source: local
    outputs:
      - name: ce_loss
        destination: local
    gt: target
opts:
  - type: Momentum
    grads:
      - inputs:
          - name: features
          - name: target
        output:
          name: ce_loss
    hyper_parameters:
      learning_rate: 1.e-2
      momentum: 0.9
grad_scalers:
  - inputs:
      - name: features
      - name: target
    output:
      name: ce_loss
hyper_parameters:
  epochs: 3
  batch_size: 64
  is_eval: True
"""

CLASSIFIER_FOLLOWER = """role: follower
model:
  train_net:
    name: cls_follower
    inputs:
      - name: pixels
        source: local
    outputs:
      - name: features
        destination: remote
  eval_net:
    name: cls_follower
    inputs:
      - name: pixels
        source: local
    outputs:
      - name: features
        destination: remote
opts:
  - type: Momentum
    grads:
      - inputs:
          - name: pixels
        output:
          name: features
        sens: ce_loss
    hyper_parameters:
      learning_rate: 1.e-2
      momentum: 0.9
"""

RECSYS_TOP = """role: leader
model:
  train_net:
    name: rec_top
    inputs:
      - name: a_vec
        source: local
      - name: b_vec
        source: remote
        compress_type: min_max
        bit_num: 5
      - name: click
        source: local
    outputs:
      - name: score
        destination: local
      - name: bce
        destination: local
  eval_net:
    name: rec_top_eval
    inputs:
      - name: a_vec
        source: local
      - name: b_vec
        source: remote
        compress_type: min_max
        bit_num: 5
    outputs:
      - name: score
        destination: local
    gt: click
opts:
  - type: Adam
    grads:
      - inputs:
          - name: a_vec
          - name: b_vec
          - name: click
        output:
          name: bce
        sens: 512.0
    params:
      - name: tower
      - name: head
    hyper_parameters:
      learning_rate: 2.e-4
      eps: 1.e-8
      loss_scale: 512.0
grad_scalers:
  - inputs:
      - name: a_vec
      - name: b_vec
    output:
      name: bce
    sens: 512.0
dataset:
  name: clicks
  features:
    - ids_a
  labels:
    - click
ckpt_path: ./ckpt_top
privacy:
  label_dp:
    eps: 2"""

RECSYS_TEE = """role: leader
model:
  train_net:
    name: rec_tee
    inputs:
      - name: a_vec
        source: local
      - name: b_vec
        source: remote
    outputs:
      - name: fused
        destination: local
  eval_net:
    name: rec_tee_eval
    inputs:
      - name: a_vec
        source: local
      - name: b_vec
        source: remote
    outputs:
      - name: fused
        destination: local
opts:
  - type: SGD
    grads:
      - inputs:
          - name: a_vec
          - name: b_vec
        output:
          name: fused
        sens: bce
    hyper_parameters:
      learning_rate: 1.e-3
      momentum: 0.5
grad_scalers:
  - inputs:
      - name: a_vec
      - name: b_vec
    output:
      name: fused
    sens: bce"""

LM_EMBEDDING = """role: follower
model:
  train_net:
    name: lm_embed
    inputs:
      - name: tokens
        source: local
      - name: positions
        source: local
      - name: mask
        source: local
    outputs:
      - name: activations
        destination: remote
      - name: tied_table
        destination: remote
      - name: positions
        destination: remote
      - name: mask
        destination: remote
  eval_net:
    name: lm_embed_eval
    inputs:
      - name: tokens
        source: local
      - name: positions
        source: local
      - name: mask
        source: local
    outputs:
      - name: activations
        destination: remote
opts:
  - type: MyLossScaledAdam
    grads:
      - inputs:
          - name: tokens
          - name: positions
          - name: mask
        output:
          name: activations
        sens: blocks_out
      - inputs:
          - name: tokens
          - name: positions
          - name: mask
        output:
          name: tied_table
        sens: tied_table
    params:
      - name: token_embedding
      - name: position_embedding
    hyper_parameters:
      learning_rate: 1.e-5
      loss_scale: 1024.0
privacy:
  embedding_dp:
    eps: 3.0"""

LM_BLOCKS_HTTPS = """role: follower
model:
  train_net:
    name: lm_blocks
    inputs:
      - name: activations
        source: remote
        compress_type: min_max
        bit_num: 6
      - name: mask
        source: remote
        compress_type: bit_pack
        bit_num: 1
      - name: positions
        source: remote
        compress_type: no_compress
    outputs:
      - name: blocks_out
        destination: remote
        compress_type: min_max
        bit_num: 6
      - name: tied_table
        destination: remote
  eval_net:
    name: lm_blocks_eval
    inputs:
      - name: activations
        source: remote
        compress_type: min_max
        bit_num: 6
      - name: step_index
        source: local
    outputs:
      - name: log_probs
        destination: local
    gt: tokens
opts:
  - type: MyLossScaledAdam
    grads:
      - inputs:
          - name: activations
          - name: mask
        output:
          name: blocks_out
        sens: lm_loss
    params:
      - name: blocks
    hyper_parameters:
      learning_rate: 1.e-5
grad_scalers:
  - inputs:
      - name: activations
      - name: mask
    output:
      name: blocks_out
    sens: lm_loss
  - inputs:
      - name: activations
    output:
      name: tied_table
    sens: lm_loss
ckpt_path: ./checkpoints"""

OLDER_STYLE = """role: follower
network: ./nets/bottom.py   # keys the original ignored
model:
  train_net:
    name: bottom
    inputs:
      - name: x
        source: local
    outputs:
      - name: h
        destination: remote
  eval_net:
    name: bottom
    inputs:
      - name: x
        source: local
    outputs:
      - name: h
        destination: remote
opts:
  - type: Adam
    grads:
      - inputs:
          - name: x
        output:
          name: h
        sens: top
    hyper_parameters:
      learning_rate: 1.e-3
hyper_parameters:
  epochs: 2
  workers: 4
"""

ALL = {"classifier_leader": CLASSIFIER_LEADER, "classifier_follower": CLASSIFIER_FOLLOWER,
       "recsys_top": RECSYS_TOP, "recsys_tee": RECSYS_TEE, "lm_embedding": LM_EMBEDDING,
       "lm_blocks_https": LM_BLOCKS_HTTPS, "older_style": OLDER_STYLE}


def load(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(ALL[name])
    return FLYamlData(str(path))


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_style_loads(tmp_path, name):
    data = load(tmp_path, name)
    # the original's dict views and derived lists agree with the typed attributes
    assert data.train_net_in_names == [i['name'] for i in data.train_net['inputs']]
    assert data.train_net_out_names == [o['name'] for o in data.train_net_outs]
    assert data.train_net_ins is data.train_net['inputs']
    assert [i['name'] for i in data.eval_net_ins] == data.eval_net.input_names
    assert data.model_data is data.yaml_data['model']
    for opt in data.opts:
        for grad in opt['grads']:
            assert grad['output']['name'] in data.train_net_out_names
            assert {i['name'] for i in grad['inputs']} <= set(data.train_net_in_names)


def test_views_read_like_the_original(tmp_path):
    top = load(tmp_path, "recsys_top")
    assert top.train_net['name'] == "rec_top" and top.eval_net_gt == "click"
    grad = top.opts[0]['grads'][0]
    assert 'sens' in grad and isinstance(grad['sens'], float) and grad['sens'] == 512.0
    assert top.opts[0]['hyper_parameters']['learning_rate'] == 2e-4
    assert [p['name'] for p in top.opts[0]['params']] == ["tower", "head"]
    assert top.grad_scalers[0]['output']['name'] == "bce"
    assert top.train_net_ins[1]['compress_type'] == "min_max" and top.train_net_ins[1]['bit_num'] == 5
    assert (top.dataset_name, top.features, top.labels) == ("clicks", ["ids_a"], ["click"])
    assert top.label_dp_eps == 2.0 and not hasattr(top, "embedding_dp_eps")
    assert top.ckpt_path == "./ckpt_top"
    leader = load(tmp_path, "classifier_leader")
    assert 'sens' not in leader.opts[0]['grads'][0] and leader.opts[0]['grads'][0].sens is None
    assert (leader.epochs, leader.batch_size, leader.is_eval) == (3, 64, True)
    assert not hasattr(leader, "label_dp_eps")
    assert (leader.dataset_name, leader.features, leader.labels) == ("", [], [])
    embed = load(tmp_path, "lm_embedding")
    assert embed.embedding_dp_eps == 3.0 and not hasattr(embed, "label_dp_eps")
    assert embed.train_net_in_names[1] == embed.train_net_out_names[2] == "positions"


def test_https_flavour_compression(tmp_path):
    blocks = load(tmp_path, "lm_blocks_https")
    assert blocks.compress_configs == {
        "activations": {"compress_type": "min_max", "bit_num": 6},
        "mask": {"compress_type": "bit_pack", "bit_num": 1},
        "blocks_out": {"compress_type": "min_max", "bit_num": 6}}
    assert [s['output']['name'] for s in blocks.grad_scalers] == ["blocks_out", "tied_table"]


def test_ignored_keys_warn_once_each(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="mindspore_federated.config.yaml_data"):
        data = load(tmp_path, "older_style")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("network: unknown key, ignored" in m for m in messages) == 1
    assert sum("hyper_parameters.workers: unknown key, ignored" in m for m in messages) == 1
    assert len(messages) == 2
    assert data.yaml_data["network"] == "./nets/bottom.py" and data.epochs == 2


def test_a_config_yaml_is_still_refused(tmp_path):
    """A yaml that is not a party description fails on its first missing key, as in the original,
    without a warning per foreign key first."""
    path = tmp_path / "network_config.yaml"
    path.write_text("data_path: ./data\nbatch_size: 16\n")
    with pytest.raises(ValueError, match="role: required"):
        FLYamlData(str(path))
