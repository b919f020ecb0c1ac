"""Split training through three FLModels equals centralised training of the uncut network."""
import numpy as np

from tests.trainer.splitnet import (SplitParties, centralised_run, copy_weights, make_batches,
                                    make_nets, params_np, user_optimizers, write_yaml, yaml_dicts)

STEPS = 20


def _compare(tmp_path, opt_type, scale, make_user_opts):
    yamls = {k: write_yaml(v, tmp_path / f"{k}.yaml")
             for k, v in yaml_dicts(opt_type, scale=scale).items()}
    split_nets = make_nets(seed=1)
    ref_nets = make_nets(seed=2)                      # different init, then overwritten
    for src, dst in zip(split_nets, ref_nets):
        copy_weights(src, dst)
    batches = make_batches(STEPS)
    initial = [params_np(n) for n in split_nets]
    parties = SplitParties(yamls, split_nets,
                           make_user_opts(split_nets) if make_user_opts else None)
    split_losses = np.array([parties.step(b) for b in batches])
    ref_losses, _ = centralised_run(ref_nets, batches)
    ref_losses = np.array(ref_losses)

    for net, before in zip(split_nets, initial):                # every party did train
        assert all(not np.allclose(a, b) for a, b in zip(params_np(net), before))
    rel = np.abs(split_losses - ref_losses) / np.abs(ref_losses)
    assert rel.max() <= 1e-6, (split_losses, ref_losses)
    for split_net, ref_net in zip(split_nets, ref_nets):
        for a, b in zip(params_np(split_net), params_np(ref_net)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert all(m.global_step == STEPS for m in parties.models)


def test_split_equals_centralised_yaml_adam(tmp_path):
    _compare(tmp_path, "Adam", None, None)


def test_split_equals_centralised_user_optimizer_loss_scale(tmp_path):
    """User nn.Cell optimizers called as opt(*inputs, sens=sens): the top uses constant sens
    1024 (also for its grad scaler, so the bottoms receive 1024-scaled gradients); every party
    un-scales before Adam."""
    _compare(tmp_path, "LossScaleAdam", 1024.0, user_optimizers)


def test_yaml_adam_with_loss_scale_hyper_parameter(tmp_path):
    """Constant sens 1024 with nn.Adam(loss_scale=1024) from hyper_parameters: same training."""
    dicts = yaml_dicts("Adam", scale=1024.0)
    for d in dicts.values():
        d["opts"][0]["hyper_parameters"]["loss_scale"] = 1024.0
    yamls = {k: write_yaml(v, tmp_path / f"{k}.yaml") for k, v in dicts.items()}
    split_nets, ref_nets = make_nets(seed=1), make_nets(seed=2)
    for src, dst in zip(split_nets, ref_nets):
        copy_weights(src, dst)
    batches = make_batches(5)
    parties = SplitParties(yamls, split_nets)
    losses = [parties.step(b) for b in batches]
    ref_losses, _ = centralised_run(ref_nets, batches)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)
