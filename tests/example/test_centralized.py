"""PanGu-alpha training recipe and the centralised trainer (tiny config, synthetic data)."""
import json
import math
import os
import shutil

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, ops

from src.lr_schedule import LearningRate, default_warmup_steps, lr_at
from src.optim import (DynamicLossScale, PanguOptimizer, PanguTrainOneStepCell, clip_grads, decay_filter,
                       grads_overflow, grads_sq_norm, unscale_grads, weight_decay_groups)
from src.pangu_alpha import PanguAlphaWithLoss, parameters_to_numpy
from src.pangu_alpha_config import get_config
from src.utils import synthetic_batch

import train_centralized


@pytest.fixture
def mode():
    old = ms.get_context("mode")

    def set_mode(m):
        ms.set_context(mode=m, device_target="CPU")
    set_mode(ms.PYNATIVE_MODE)
    yield set_mode
    ms.set_context(mode=old)


def _tensors(batch):
    return Tensor(batch["input_ids"]), Tensor(batch["position_id"]), Tensor(batch["attention_mask"])


def _cfg(**kw):
    base = dict(vocab_size=200, dropout_rate=0.0, num_layers=2, seq_length=16)
    base.update(kw)
    return get_config("tiny", **base)


# ------------------------------------------------------------------------------ pieces of the recipe
def test_learning_rate_warmup_then_cosine(mode):
    lr = LearningRate(1e-4, 1e-6, warmup_steps=10, decay_steps=100)
    for step in (0, 4, 9, 10, 35, 60, 110, 500):
        got = float(lr(Tensor(np.array([step], np.int32))).asnumpy())
        assert abs(got - lr_at(step, 1e-4, 1e-6, 10, 100)) < 1e-10
    assert lr_at(9, 1e-4, 1e-6, 10, 100) == pytest.approx(1e-4)
    assert lr_at(60, 1e-4, 1e-6, 10, 100) == pytest.approx((1e-4 + 1e-6) / 2)
    assert lr_at(110, 1e-4, 1e-6, 10, 100) == pytest.approx(1e-6)
    assert default_warmup_steps(200000) == 2000 and default_warmup_steps(100) == 10


def test_weight_decay_groups():
    net = PanguAlphaWithLoss(_cfg())
    groups = weight_decay_groups(net.trainable_params(), 0.1)
    decayed = {p.name for p in groups[0]["params"]}
    plain = {p.name for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert "backbone.blocks.0.attention.dense1.weight" in decayed
    assert "backbone.embedding.word_embedding.embedding_table" in decayed
    assert "backbone.blocks.0.attention.dense1.bias" in plain
    assert "backbone.layernorm.gamma" in plain and "backbone.top_query_layer.layernorm2.beta" in plain
    assert not decay_filter("x.layernorm1.beta") and decay_filter("x.output.mapping.weight")


def test_norm_clip_and_overflow_helpers(mode):
    grads = (Tensor(np.full((2, 3), 2.0, np.float32)), Tensor(np.array([4.0], np.float32)))
    assert float(grads_sq_norm(grads).asnumpy()) == pytest.approx(6 * 4 + 16)
    assert not bool(grads_overflow(grads).asnumpy())
    clipped = clip_grads(grads, Tensor(np.float32(math.sqrt(40.0))), 1.0)
    assert float(grads_sq_norm(clipped).asnumpy()) == pytest.approx(1.0, rel=1e-6)
    small = clip_grads(grads, Tensor(np.float32(0.5)), 1.0)
    np.testing.assert_array_equal(small[0].asnumpy(), grads[0].asnumpy())
    unscaled = unscale_grads(grads, Tensor(np.float32(1024.0)))
    assert float(unscaled[1].asnumpy()[0]) == 4.0 / 1024
    bad = (grads[0], Tensor(np.array([np.inf], np.float32)))
    assert bool(grads_overflow(bad).asnumpy())
    assert bool(grads_overflow((Tensor(np.array([np.nan], np.float32)),)).asnumpy())


def test_dynamic_loss_scale_grows_after_window_and_halves_on_overflow(mode):
    scaler = DynamicLossScale(1024.0, 2.0, scale_window=3)
    no, yes = Tensor(False), Tensor(True)
    for _ in range(2):
        scaler(no)
    assert float(scaler.loss_scale.asnumpy()) == 1024.0 and int(scaler.clean_steps.asnumpy()) == 2
    scaler(no)
    assert float(scaler.loss_scale.asnumpy()) == 2048.0 and int(scaler.clean_steps.asnumpy()) == 0
    scaler(no)
    scaler(yes)
    assert float(scaler.loss_scale.asnumpy()) == 1024.0 and int(scaler.clean_steps.asnumpy()) == 0
    names = {p.name for p in scaler.get_parameters()}
    assert names == {"loss_scale", "loss_scale_clean_steps"}


def test_injected_inf_gradient_skips_update_and_halves_scale(mode):
    cfg = _cfg()
    net = PanguAlphaWithLoss(cfg)
    opt = PanguOptimizer(net.trainable_params(), 1e-3, 1e-5, 2, 10, loss_scale=2.0 ** 20)
    before = parameters_to_numpy(net)
    grads = tuple(Tensor(np.full(p.shape, 0.01, np.float32)) for p in net.trainable_params())
    grads = grads[:3] + (Tensor(np.full(grads[3].shape, np.inf, np.float32)),) + grads[4:]
    overflow = grads_overflow(grads)
    assert bool(overflow.asnumpy())
    opt(grads, ops.sqrt(grads_sq_norm(grads)), overflow)
    after = parameters_to_numpy(net)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    assert float(opt.get_loss_scale().asnumpy()) == 2.0 ** 19
    assert int(opt.global_step.asnumpy().reshape(-1)[0]) == 0
    # the next clean step is applied
    clean = tuple(Tensor(np.full(p.shape, 0.01, np.float32)) for p in net.trainable_params())
    opt(clean, ops.sqrt(grads_sq_norm(clean)), grads_overflow(clean))
    assert int(opt.global_step.asnumpy().reshape(-1)[0]) == 1
    moved = parameters_to_numpy(net)
    assert any(not np.array_equal(before[k], moved[k]) for k in before)


def test_train_cell_overflow_from_huge_loss_scale(mode):
    """A loss scale so large that loss*scale overflows: the step is skipped and the scale halved."""
    cfg = _cfg()
    net = PanguAlphaWithLoss(cfg)
    opt = PanguOptimizer(net.trainable_params(), 1e-3, 1e-5, 2, 10, loss_scale=2.0 ** 127)
    cell = PanguTrainOneStepCell(net, opt)
    before = parameters_to_numpy(net)
    batch = synthetic_batch(0, 2, cfg.seq_length, cfg.vocab_size, cfg.eod_id)
    loss, overflow, scale = cell(*_tensors(batch))
    assert bool(overflow.asnumpy()) and float(scale.asnumpy()) == 2.0 ** 127
    assert math.isfinite(float(loss.asnumpy()))
    assert float(opt.get_loss_scale().asnumpy()) == 2.0 ** 126
    after = parameters_to_numpy(net)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)


def test_pieces_applied_per_party_equal_one_optimizer(mode):
    """Two 'parties' with one shared global norm and overflow decision == one centralised optimizer."""
    cfg = _cfg(num_layers=3)
    batches = [synthetic_batch(i, 2, cfg.seq_length, cfg.vocab_size, cfg.eod_id) for i in range(3)]
    kw = dict(start_lr=5e-3, end_lr=1e-4, warmup_steps=1, decay_steps=3, loss_scale=1024.0, clip_norm=0.05)

    net_c = PanguAlphaWithLoss(cfg)
    cell = PanguTrainOneStepCell(net_c, PanguOptimizer(net_c.trainable_params(), **kw))
    for b in batches:
        cell(*_tensors(b))

    net_s = PanguAlphaWithLoss(cfg)
    params = net_s.trainable_params()
    part_a = [i for i, p in enumerate(params) if ".blocks." not in p.name]
    part_b = [i for i, p in enumerate(params) if ".blocks." in p.name]
    opt_a = PanguOptimizer([params[i] for i in part_a], **kw)
    opt_b = PanguOptimizer([params[i] for i in part_b], **kw)
    grad_fn = ops.GradOperation(get_by_list=True, sens_param=True)(net_s, ms.ParameterTuple(params))
    for b in batches:
        scale = opt_a.get_loss_scale() * 1.0
        grads = unscale_grads(grad_fn(*_tensors(b), scale), scale)
        ga, gb = tuple(grads[i] for i in part_a), tuple(grads[i] for i in part_b)
        norm = ops.sqrt(grads_sq_norm(ga) + grads_sq_norm(gb))
        overflow = ops.logical_or(grads_overflow(ga), grads_overflow(gb))
        opt_a(ga, norm, overflow)
        opt_b(gb, norm, overflow)
    c, s = parameters_to_numpy(net_c), parameters_to_numpy(net_s)
    for k in c:
        np.testing.assert_allclose(s[k], c[k], rtol=1e-5, atol=1e-7, err_msg=k)


# ------------------------------------------------------------------------------ centralised trainer
def _args(tmp, steps, *extra):
    return train_centralized.parse_args([
        "--mode", "tiny", "--synthetic", "--exec_mode", "graph", "--vocab_size", "1000", "--seed", "3",
        "--train_steps", str(steps), "--output_dir", str(tmp), "--log_steps", "5", *extra])


def test_tiny_training_loss_falls(tmp_path, mode, capsys):
    log = tmp_path / "loss.json"
    res = train_centralized.run(_args(tmp_path, 50, "--loss_log", str(log), "--save_ckpt_steps", "0",
                                      "--dropout_rate", "0.1"))
    losses = res["losses"]
    assert len(losses) == 50
    assert abs(losses[0] - math.log(1000)) < 0.3
    assert np.mean(losses[-10:]) < np.mean(losses[:5]) - 1.5
    out = capsys.readouterr().out
    assert "epoch 1 step 5/50 loss: " in out and "epoch 1 step 50/50 loss: " in out
    assert "perplexity" in out and res["perplexity"] < 300
    records = json.loads(log.read_text())
    assert [r["step"] for r in records] == list(range(1, 51)) and records[0]["loss"] == pytest.approx(losses[0])


def test_resume_continues_exactly(tmp_path, mode):
    full = train_centralized.run(_args(tmp_path / "full", 10, "--save_ckpt_steps", "5", "--dropout_rate", "0"))
    os.makedirs(tmp_path / "resumed")
    shutil.copy(tmp_path / "full" / "pangu_centralized_step_5.ckpt", tmp_path / "resumed")
    resumed = train_centralized.run(_args(tmp_path / "resumed", 10, "--save_ckpt_steps", "5",
                                          "--dropout_rate", "0", "--resume"))
    assert resumed["losses"] == full["losses"][5:]
    a = ms.load_checkpoint(str(tmp_path / "full" / "pangu_centralized_step_10.ckpt"))
    b = ms.load_checkpoint(str(tmp_path / "resumed" / "pangu_centralized_step_10.ckpt"))
    assert set(a) == set(b) and "loss_scale" in a and any(k.startswith("adam_m.") for k in a)
    for k in a:
        np.testing.assert_array_equal(a[k].asnumpy(), b[k].asnumpy(), err_msg=k)


def test_trainer_needs_data(tmp_path, mode):
    args = train_centralized.parse_args(["--mode", "tiny", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="--data_url"):
        train_centralized.run(args)


@pytest.mark.parametrize("leader_layers", [0, 1])
def test_norm_groups_are_the_split_optimizers_parameters_in_their_order(leader_layers):
    """The centralised step sums the squared gradient norm over exactly the split parties'
    optimizers' parameters, in their order (what keeps the two runs bit-identical)."""
    from src.split_pangu_alpha import BackboneLossNet, EmbeddingLossNet, HeadLossNet, norm_groups
    cfg = _cfg(num_layers=4, leader_layers=leader_layers)
    nets = [HeadLossNet(cfg), EmbeddingLossNet(cfg), BackboneLossNet(cfg)]
    assert norm_groups(cfg) == [[p.name for p in net.trainable_params()] for net in nets]
    whole = PanguAlphaWithLoss(cfg).trainable_params()
    assert sorted(sum(norm_groups(cfg), [])) == sorted(p.name for p in whole)


def test_grouped_norm_is_the_float32_sum_in_group_order(mode):
    """With groups, the clip uses sqrt((g1 + g2) + g3) of the groups' float32 sums of squares: a
    clip-norm-sized step applied to zero-Adam state equals the reference computed in numpy."""
    cfg = _cfg(num_layers=3)
    net = PanguAlphaWithLoss(cfg)
    names = [p.name for p in net.trainable_params()]
    groups = [names[5:], names[:2], names[2:5]]
    with pytest.raises(ValueError, match="exactly once"):
        PanguTrainOneStepCell(net, PanguOptimizer(net.trainable_params()), norm_groups=[names[1:]])
    probe = []

    class Recording(PanguOptimizer):
        def construct(self, grads, global_norm, overflow):
            probe.append((tuple(g.asnumpy() for g in grads), float(global_norm.asnumpy())))
            return overflow

    cell = PanguTrainOneStepCell(net, Recording(net.trainable_params(), loss_scale=1.0), norm_groups=groups)
    cell(*_tensors(synthetic_batch(0, 2, cfg.seq_length, cfg.vocab_size, cfg.eod_id)))
    grads, norm = probe[0]
    index = {n: i for i, n in enumerate(names)}
    total = np.float32(0.0)
    for group in groups:
        total = np.float32(total + np.float32(sum(np.sum(np.square(grads[index[n]], dtype=np.float64))
                                                  for n in group)))
    assert norm == pytest.approx(float(np.sqrt(total)), rel=1e-6)
