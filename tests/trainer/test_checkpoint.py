"""Checkpoints: 10 steps + save + load into fresh FLModels + 10 steps == 20 steps."""
import os

import mindspore as ms
import numpy as np
import pytest

from mindspore_federated import FLModel
from tests.trainer.splitnet import (SplitParties, make_batches, make_nets, params_np,
                                    user_optimizers, write_yaml, yaml_dicts)


def _setup(tmp_path, kind, seed, ckpt_dir):
    if kind == "yaml":
        dicts, make_opts = yaml_dicts("Adam", ckpt_path=str(ckpt_dir)), None
    else:
        dicts, make_opts = yaml_dicts("LossScaleAdam", scale=1024.0,
                                      ckpt_path=str(ckpt_dir)), user_optimizers
    yamls = {k: write_yaml(v, tmp_path / f"{k}.yaml") for k, v in dicts.items()}
    nets = make_nets(seed)
    return SplitParties(yamls, nets, make_opts(nets) if make_opts else None), nets


def _opt_state(parties):
    state = []
    for model in parties.models:
        for opt in model.optimizers:
            state += [p.asnumpy().copy() for p in opt.get_parameters()]
    return state


@pytest.mark.parametrize("kind", ["yaml", "user"])
def test_resume_equals_uninterrupted(tmp_path, kind):
    batches = make_batches(20)
    ckpt_dir = tmp_path / "ckpt"
    straight, straight_nets = _setup(tmp_path, kind, 1, ckpt_dir)
    straight_losses = [straight.step(b) for b in batches]

    first, _ = _setup(tmp_path, kind, 1, ckpt_dir)
    first_losses = [first.step(b) for b in batches[:10]]
    files = [m.save_ckpt() for m in first.models]
    assert [os.path.basename(f) for f in files] == [
        "follower_net_step_10.ckpt", "leader_bottom_step_10.ckpt", "leader_top_step_10.ckpt"]

    resumed, resumed_nets = _setup(tmp_path, kind, 7, ckpt_dir)     # different random init
    assert not np.array_equal(params_np(resumed_nets[0])[0], params_np(straight_nets[0])[0])
    for model in resumed.models:
        model.load_ckpt("train")
        assert model.global_step == 10
    assert all(np.array_equal(a, b) for a, b in zip(_opt_state(resumed), _opt_state(first)))
    resumed_losses = [resumed.step(b) for b in batches[10:]]

    assert first_losses + resumed_losses == straight_losses
    for a_net, b_net in zip(straight_nets, resumed_nets):
        for a, b in zip(params_np(a_net), params_np(b_net)):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(_opt_state(straight), _opt_state(resumed)):
        np.testing.assert_array_equal(a, b)
    assert all(m.global_step == 20 for m in resumed.models)


def test_directory_picks_highest_step_and_eval_phrase(tmp_path):
    parties, nets = _setup(tmp_path, "yaml", 1, tmp_path / "c")
    batches = make_batches(3)
    parties.step(batches[0])
    parties.l.save_ckpt()
    parties.step(batches[1])
    parties.step(batches[2])
    expected = params_np(nets[1])
    saved = parties.l.save_ckpt(str(tmp_path / "c"))
    assert saved.endswith("leader_bottom_step_3.ckpt")
    # a stray file with another prefix must be ignored
    (tmp_path / "c" / "other_step_99.ckpt").write_bytes(b"")

    fresh, fresh_nets = _setup(tmp_path, "yaml", 5, tmp_path / "c")
    assert fresh.l.load_ckpt("train") == saved
    assert fresh.l.global_step == 3
    for a, b in zip(expected, params_np(fresh_nets[1])):
        np.testing.assert_array_equal(a, b)

    # 'eval' loads the weights into a separate eval network, leaves global_step alone
    yaml_l = parties.l.yaml_data
    _, eval_bottom, _ = make_nets(11)
    train_bottom = make_nets(12)[1]
    model = FLModel(yaml_l, train_bottom, eval_network=eval_bottom)
    model.load_ckpt("eval", str(tmp_path / "c" / "leader_bottom_step_1.ckpt"))
    assert model.global_step == 0
    assert not np.array_equal(params_np(eval_bottom)[0], expected[0])  # step 1, not step 3
    model.load_ckpt("eval", str(tmp_path / "c"))
    for a, b in zip(expected, params_np(eval_bottom)):
        np.testing.assert_array_equal(a, b)


def test_missing_checkpoint_errors(tmp_path):
    parties, _ = _setup(tmp_path, "yaml", 1, tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no_such"):
        parties.f.load_ckpt("train", str(tmp_path / "no_such"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"follower_net_step_<n>\.ckpt.*empty"):
        parties.f.load_ckpt("train")
    with pytest.raises(ValueError, match="phrase"):
        parties.f.load_ckpt("resume")


def test_weight_only_checkpoint_loads_for_train_and_eval(tmp_path, caplog):
    """The original saved weights only (mindspore.save_checkpoint(train_network)): training
    resumes from them with fresh optimizer state, with a warning; missing weights are an error."""
    parties, nets = _setup(tmp_path, "yaml", 1, tmp_path / "c")
    weights_only = str(tmp_path / "weights.ckpt")
    ms.save_checkpoint(nets[0], weights_only, append_dict={"global_step": 4})
    fresh, fresh_nets = _setup(tmp_path, "yaml", 9, tmp_path / "c")
    with caplog.at_level("WARNING"):
        fresh.f.load_ckpt("train", weights_only)
    assert "weights only" in caplog.text
    for a, b in zip(params_np(nets[0]), params_np(fresh_nets[0])):
        np.testing.assert_array_equal(a, b)
    assert fresh.f.global_step == 4
    assert int(fresh.f.optimizers[0].global_step.asnumpy().reshape(-1)[0]) == 4
    parties.f.load_ckpt(path=weights_only)      # default phrase 'eval', as in the original

    partial = str(tmp_path / "partial.ckpt")
    ms.save_checkpoint([{"name": p.name, "data": p} for p in nets[0].trainable_params()[:1]], partial)
    with pytest.raises(ValueError, match="lacks .* weights of train_net"):
        fresh.f.load_ckpt("train", partial)
