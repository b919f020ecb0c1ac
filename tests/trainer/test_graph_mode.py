"""FLModel in GRAPH_MODE (compiled backward + optimizer) equals centralised training."""
import logging

import numpy as np
import pytest
import mindspore as ms

from tests.trainer.splitnet import (SplitParties, centralised_run, copy_weights, make_batches,
                                    make_nets, params_np, user_optimizers, write_yaml, yaml_dicts)

STEPS = 8


@pytest.fixture
def graph_mode():
    old = ms.get_context("mode")
    yield
    ms.set_context(mode=old)


def _compare(tmp_path, opt_type, scale=None, make_user_opts=None):
    yamls = {k: write_yaml(v, tmp_path / f"{k}.yaml")
             for k, v in yaml_dicts(opt_type, scale=scale).items()}
    split_nets, ref_nets = make_nets(seed=1), make_nets(seed=2)
    for src, dst in zip(split_nets, ref_nets):
        copy_weights(src, dst)
    batches = make_batches(STEPS)
    ms.set_context(mode=ms.PYNATIVE_MODE)                   # the reference: PyNative, uncut net
    ref_losses, _ = centralised_run(ref_nets, batches)
    ms.set_context(mode=ms.GRAPH_MODE)
    parties = SplitParties(yamls, split_nets,
                           make_user_opts(split_nets) if make_user_opts else None)
    losses = [parties.step(b) for b in batches]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)
    for split_net, ref_net in zip(split_nets, ref_nets):
        for a, b in zip(params_np(split_net), params_np(ref_net)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert all(m.global_step == STEPS for m in parties.models)
    return parties


def test_graph_mode_split_equals_centralised(tmp_path, graph_mode, caplog):
    with caplog.at_level(logging.INFO, logger="mindspore_federated.trainer.fl_model"):
        parties = _compare(tmp_path, "Adam")
    compiled = [r.getMessage() for r in caplog.records if "compiled as one graph" in r.getMessage()]
    assert len(compiled) == 3, compiled                   # once per party, not once per step
    # the top's grad scaler and its optimizer share one pass; Adam runs inside the graph
    assert "1 vjp passes, 1 optimizers inside" in " ".join(compiled)
    assert parties.t._fused_opts == {0}


def test_graph_mode_with_constant_loss_scale_and_user_optimizers(tmp_path, graph_mode):
    """User optimizers called as opt(*inputs, sens=sens) keep working in graph mode."""
    _compare(tmp_path, "LossScaleAdam", 1024.0, user_optimizers)


class _FusedTopParties(SplitParties):
    """The top party runs forward and backward as one call (as a loss party can)."""

    def step(self, batch):
        f_out = self.f.forward_one_step({"xf": batch["xf"]})
        l_out = self.l.forward_one_step({"ids": batch["ids"], "xl": batch["xl"]})
        t_local = {"hl": l_out["hl"], "table": l_out["table"], "y": batch["y"]}
        out, grads = self.t.forward_backward_one_step(t_local, {"hf": f_out["hf"]})
        self.l.backward_one_step({"ids": batch["ids"], "xl": batch["xl"]},
                                 sens={"loss": {"hl": grads["loss"]["hl"], "table": grads["loss"]["table"]}})
        self.f.backward_one_step({"xf": batch["xf"]}, sens={"loss": {"hf": grads["loss"]["hf"]}})
        return float(out["loss"].asnumpy())


@pytest.mark.parametrize("mode", ["graph", "pynative"])
def test_forward_backward_one_step_equals_centralised(tmp_path, graph_mode, mode):
    yamls = {k: write_yaml(v, tmp_path / f"{k}.yaml") for k, v in yaml_dicts("Adam").items()}
    nets, ref_nets = make_nets(seed=1), make_nets(seed=2)
    for src, dst in zip(nets, ref_nets):
        copy_weights(src, dst)
    batches = make_batches(5)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ref_losses, _ = centralised_run(ref_nets, batches)
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    parties = _FusedTopParties(yamls, nets)
    np.testing.assert_allclose([parties.step(b) for b in batches], ref_losses, rtol=1e-6)
    for net, ref in zip(nets, ref_nets):
        for a, b in zip(params_np(net), params_np(ref)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert parties.t.global_step == 5
