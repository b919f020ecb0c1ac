"""What exactness rests on: one overflow decision for both parties.

A gradient overflow at party B in step K must make BOTH parties skip step K and halve the loss
scale, exactly as centralised training does when step K overflows. Two ways B can overflow:
an Inf in its own weight gradient, and a gradient for A that the wire cannot carry (sent as zeros:
then A's gradients and every squared norm are finite, and only B's overflow flag in its
BACKWARD_REPLY tells A to skip -- remove that flag from the decision and this test fails).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor

import run_pangu_train_local
import train_centralized
import src.optim as optim
import src.split_train as st
from mindspore_federated.protocol import GradientStats
from src.split_pangu_alpha import BackboneLossNet, PanguAlphaAdam

STEPS, K = 8, 4
COMMON = ["--mode", "tiny", "--vocab_size", "1000", "--seed", "5", "--train_steps", str(STEPS), "--log_steps", "4",
          "--dropout_rate", "0", "--loss_scale", "1024", "--exec_mode", "pynative", "--eval_steps", "2",
          "--save_ckpt_steps", "0", "--synthetic", "--run_config", "none"]


@pytest.fixture(scope="module")
def centralised(tmp_path_factory):
    """Centralised run whose step K overflows (its overflow flag forced at step K)."""
    out = tmp_path_factory.mktemp("central_overflow")
    real, calls = optim.grads_overflow, [0]

    def forced(grads):
        calls[0] += 1
        return Tensor(True) if calls[0] == K else real(grads)
    optim.grads_overflow = forced
    try:
        result = train_centralized.run(train_centralized.parse_args(
            COMMON + ["--output_dir", str(out), "--loss_log", str(out / "loss.json")]))
    finally:
        optim.grads_overflow = real
    records = json.loads((out / "loss.json").read_text())
    assert [r["overflow"] for r in records] == [int(s == K) for s in range(1, STEPS + 1)]
    return result, records


def _poison_weights(monkeypatch):
    real, calls = PanguAlphaAdam.apply_gradients, [0]

    def apply_gradients(self, grads):
        if isinstance(self._network, BackboneLossNet):   # pylint: disable=protected-access
            calls[0] += 1
            if calls[0] == K:
                grads = list(grads)
                grads[0] = grads[0] + Tensor(np.float32(np.inf))
        real(self, grads)
    monkeypatch.setattr(PanguAlphaAdam, "apply_gradients", apply_gradients)


def _poison_wire(monkeypatch):
    """At step K, B's gradient for A cannot be encoded: as `sendable_gradient` does, B sends zeros
    and raises its overflow flag (its own weight gradients stay finite)."""
    real = st.FollowerParty.backward

    def backward(self, msg):
        tensors, stats = real(self, msg)
        if msg.step == K:
            grad = tensors["hidden_states"]["embedding_table"]
            tensors = {"hidden_states": {"embedding_table": Tensor(np.zeros(grad.shape, np.float32))}}
            stats = GradientStats(stats.sq_norm, True)
        return tensors, stats
    monkeypatch.setattr(st.FollowerParty, "backward", backward)


@pytest.mark.parametrize("poison", [pytest.param(_poison_weights, id="inf_in_B_weights", marks=pytest.mark.slow),
                                    pytest.param(_poison_wire, id="B_gradient_unsendable")])
def test_overflow_at_B_skips_the_same_step_on_both_parties_as_centralised(poison, centralised, monkeypatch, tmp_path):
    central, central_records = centralised
    poison(monkeypatch)
    old_mode = ms.get_context("mode")
    split = st.run_local(run_pangu_train_local.parse_args(
        COMMON + ["--output_dir", str(tmp_path), "--loss_log", str(tmp_path / "loss.json")]))
    ms.set_context(mode=old_mode)
    records = json.loads((tmp_path / "loss.json").read_text())
    assert [r["overflow"] for r in records] == [int(s == K) for s in range(1, STEPS + 1)]
    # the same loss-scale trajectory as centralised: 1024 until K, 512 after
    assert [r["loss_scale"] for r in records] == [r["loss_scale"] for r in central_records]
    leader, follower = split["leader"], split["follower"]
    scales = {leader.head_opt.loss_scale_value(), leader.embedding_opt.loss_scale_value(),
              follower.opt.loss_scale_value()}
    assert scales == {512.0}
    assert {leader.head_opt.applied_updates(), leader.embedding_opt.applied_updates(),
            follower.opt.applied_updates()} == {STEPS - 1}
    # and the same losses: step K's update was skipped on both sides, as centrally
    np.testing.assert_allclose(split["losses"], central["losses"], rtol=1e-5)
    assert all(np.isfinite(split["losses"]))
