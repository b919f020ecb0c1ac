"""Split PanGu-alpha (issue 5): split training == centralised training, step for step.

Default suite: the one-process split run against train_centralized.run (30 steps, tiny, dropout 0),
the same with the split point moved (party A keeps block 0: --leader_layers 1) and with party B as
two pipeline stages (--pipeline_stages 2: A + B1 + B2), in-process resume, the protocol checks, bad
input, and ONE two-process run over mutual TLS.
Slow: two-process resume after stopping both, a follower restarted mid-run, the split point across
two processes and its mismatch, graph mode, the pipeline as three processes over mutual TLS (exact,
a mis-split, a stage stopped by SIGTERM).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import mindspore as ms

from src.pangu_alpha import canonical_name, parameters_to_numpy
from mindspore_federated.protocol import Kind, LocalChannel, ProtocolError, describe_settings_mismatch, make_message
from src.split_pangu_alpha import config_fingerprint
from src.split_train import run_local
import run_pangu_train_local
import train_centralized
from tests.example.two_party import EXAMPLE_DIR, REPO, follower_result, free_port, run_two_processes, start

PYTHON = sys.executable
STEPS = 30
PASSWORD = "split-test-pw"
COMMON = ["--mode", "tiny", "--vocab_size", "1000", "--seed", "3", "--train_steps", str(STEPS),
          "--log_steps", "10", "--dropout_rate", "0", "--loss_scale", "1024", "--exec_mode", "pynative",
          "--eval_steps", "4", "--run_config", "none"]


def _local_args(out: Path, *extra: str):
    return run_pangu_train_local.parse_args(COMMON + ["--synthetic", "--output_dir", str(out),
                                                      "--log_file", str(out / "local.log"), *extra])


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def _split_params(result) -> dict:
    """canonical name -> value of every sub-network parameter of a split run (A's two nets, B's)."""
    leader = result["leader"]
    out = {}
    for net in (leader.embedding_net, leader.head_net, *(stage.net for stage in result["stages"])):
        for name, value in parameters_to_numpy(net).items():
            assert canonical_name(name) not in out, name
            out[canonical_name(name)] = value
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The 30-step split run (one process, checkpoints at 20 and 30) and its centralised twin."""
    root = tmp_path_factory.mktemp("split")
    old_mode = ms.get_context("mode")
    split = run_local(_local_args(root / "split", "--save_ckpt_steps", "20",
                                  "--loss_log", str(root / "split" / "loss.json")))
    central = train_centralized.run(train_centralized.parse_args(
        COMMON + ["--synthetic", "--output_dir", str(root / "central"), "--save_ckpt_steps", str(STEPS)]))
    moved = run_local(_local_args(root / "split_k1", "--leader_layers", "1", "--save_ckpt_steps", "20"))
    pipeline = run_local(_local_args(root / "pipeline", "--pipeline_stages", "2", "--save_ckpt_steps", "20"))
    ms.set_context(mode=old_mode)
    return {"root": root, "split": split, "central": central, "split_k1": moved, "pipeline": pipeline}


# ------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("layout", ["split", "split_k1", "pipeline"])
def test_local_split_losses_match_centralised(runs, layout):
    split, central = runs[layout]["losses"], runs["central"]["losses"]
    assert len(split) == len(central) == STEPS
    assert _rel(split, central) <= 1e-5, (split, central)
    assert split[-1] < split[0] - 0.5                                 # it does learn
    assert runs[layout]["perplexity"] == pytest.approx(runs["central"]["perplexity"], rel=1e-5)


def test_split_point_moves_block_0_to_party_a(runs):
    """--leader_layers 1: block 0 is trained at A (by the embedding's optimizer), B holds the rest."""
    leader, follower = runs["split_k1"]["leader"], runs["split_k1"]["follower"]
    a_names = {canonical_name(p.name) for p in leader.embedding_opt.parameters}
    b_names = {canonical_name(p.name) for p in follower.net.trainable_params()}
    assert any(n.startswith("backbone.blocks.0.") for n in a_names)
    assert not any(n.startswith("backbone.blocks.0.") for n in b_names)
    assert {n.split(".")[2] for n in b_names} == {str(i) for i in range(1, leader.config.num_blocks)}
    assert sorted(os.listdir(runs["root"] / "split_k1" / "checkpoints" / "follower")) == [
        "backbone_loss_net_step_20.ckpt", "backbone_loss_net_step_30.ckpt"]


def test_pipeline_equals_the_two_party_split(runs):
    """A + B1 + B2 computes what A + B computes; each stage holds and checkpoints its own blocks, under
    the whole model's names."""
    np.testing.assert_allclose(runs["pipeline"]["losses"], runs["split"]["losses"], rtol=1e-5)
    stages = runs["pipeline"]["stages"]
    assert [(s.name, s.blocks) for s in stages] == [("follower", (0, 1)), ("follower2", (1, 2))]
    assert [s.global_step for s in stages] == [STEPS, STEPS]
    ckpt = runs["root"] / "pipeline" / "checkpoints"
    for stage, block in (("follower", 0), ("follower2", 1)):
        names = {canonical_name(k) for k in ms.load_checkpoint(str(ckpt / stage / "backbone_loss_net_step_30.ckpt"))
                 if "backbone.blocks." in k}
        assert names and {n.split(".")[2] for n in names} == {str(block)}, names
    # B1 received only A's activations and the head's gradient, as the single follower does
    assert stages[0].received_keys == {"embedding_table", "attention_mask", "output.hidden_states"}


def test_pipeline_stage_split_and_mismatch():
    from src.pangu_alpha_config import get_config
    from src.split_pangu_alpha import stage_blocks, stage_fingerprint
    config = get_config("tiny", num_layers=8)          # 7 blocks
    assert [stage_blocks(config, 3, i) for i in range(3)] == [(0, 3), (3, 5), (5, 7)]
    moved = get_config("tiny", num_layers=8, leader_layers=2)
    assert [stage_blocks(moved, 2, i) for i in range(2)] == [(2, 5), (5, 7)]
    with pytest.raises(ValueError, match=r"--pipeline_stages 8: party B's 7 transformer block\(s\).*allow 1 to 7"):
        stage_blocks(config, 8, 0)
    with pytest.raises(ValueError, match=r"--stage_index 3: stages are numbered 0 to 2"):
        stage_blocks(config, 3, 3)
    # stage 0 of 2 expects its next stage to hold blocks 4..6; a stage started as 2 of 3 holds 5..6
    assert describe_settings_mismatch(stage_fingerprint(config, 2, 1), stage_fingerprint(config, 3, 2)) == \
        "pipeline_stages: ours 2, peer 3; stage_blocks: ours 4-6, peer 5-6"


@pytest.mark.parametrize("compress", ["none", "min_max6"])
def test_pipeline_stage_yamls_fit_together(compress):
    """Each stage sends what the next one takes, and the next one's grad-scaler reply is its sens;
    the first stage faces A like the single follower; compressed, the mask stays bit-packed."""
    from src.split_train import party_yaml, stage_yaml
    stages = [stage_yaml(compress, 3, i).yaml_data for i in range(3)]
    single = party_yaml("backbone", compress).yaml_data
    net = lambda raw: raw["model"]["train_net"]  # noqa: E731
    assert net(stages[0])["inputs"] == net(single)["inputs"]
    assert net(stages[-1])["outputs"] == net(single)["outputs"]
    for up, down in zip(stages, stages[1:]):
        assert [o["name"] for o in net(up)["outputs"]] == [i["name"] for i in net(down)["inputs"]]
        assert {g["sens"] for opt in up["opts"] for g in opt["grads"]} == {down["grad_scalers"][0]["output"]["name"]}
        assert up["grad_scalers"][0]["sens"] == "hidden_states"
    mask = [o for o in net(stages[0])["outputs"] if o["name"] == "attention_mask"][0]
    assert mask.get("compress_type") == (None if compress == "none" else "bit_pack")


def test_split_point_must_leave_party_b_a_block():
    from src.pangu_alpha_config import get_config
    with pytest.raises(ValueError, match=r"leader_layers=2: party A can keep 0 to 1 of the 2 ordinary blocks"):
        get_config("tiny", leader_layers=2)
    a = config_fingerprint(get_config("tiny", leader_layers=1))
    assert describe_settings_mismatch(a, config_fingerprint(get_config("tiny"))) == "leader_layers: ours 1, peer 0"


@pytest.mark.parametrize("layout", ["split", "split_k1", "pipeline"])
def test_local_split_parameters_match_centralised(runs, layout):
    ckpt = runs["central"]["checkpoint"]
    assert ckpt and ckpt.endswith(f"_step_{STEPS}.ckpt")
    reference = {canonical_name(k): v.asnumpy() for k, v in ms.load_checkpoint(ckpt).items()
                 if k.startswith("backbone.")}
    got = _split_params(runs[layout])
    assert set(got) == set(reference)                 # the three sub-networks = the whole model
    for name, value in got.items():
        ref = reference[name]
        if name.endswith("attention.dense2.bias"):
            # The key bias cannot change the output (softmax is shift-invariant per query), so its
            # exact gradient is 0 and Adam normalises pure round-off noise into +-lr steps: only
            # bounded by the learning rate, in any two implementations.
            assert np.abs(value - ref).max() <= 2 * 1e-3 * STEPS, name
            continue
        # scale floor = the init std: a few parameters (the key bias, whose gradient is exactly
        # zero in theory) only hold round-off noise of ~1e-9
        scale = max(float(np.abs(ref).max()), 0.02)
        np.testing.assert_allclose(value, ref, rtol=0, atol=1e-6 * scale, err_msg=name)


def test_follower_only_sees_activations(runs):
    follower = runs["split"]["follower"]
    assert follower.received_keys == {"embedding_table", "attention_mask", "output.hidden_states"}
    assert not hasattr(follower, "dataset") and not hasattr(follower, "source")


def test_checkpoints_log_and_lines(runs):
    root = runs["root"] / "split"
    files = sorted(os.listdir(root / "checkpoints" / "leader"))
    assert files == sorted(f"{n}_step_{s}.ckpt" for n in ("embedding_loss_net", "head_loss_net") for s in (20, 30))
    assert sorted(os.listdir(root / "checkpoints" / "follower")) == [
        "backbone_loss_net_step_20.ckpt", "backbone_loss_net_step_30.ckpt"]
    log = (root / "local.log").read_text()
    assert f"epoch 1 step 10/{STEPS} loss: " in log and f"epoch 1 step {STEPS}/{STEPS} loss: " in log
    assert "perplexity" in log
    records = json.loads((root / "loss.json").read_text())
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))


LAYOUT_FLAGS = {"split": [], "split_k1": ["--leader_layers", "1"], "pipeline": ["--pipeline_stages", "2"]}


@pytest.mark.parametrize("layout", ["split", "split_k1", "pipeline"])
def test_local_resume_equals_uninterrupted(runs, tmp_path, layout):
    """Every party restarts from its step-20 checkpoints; steps 21..30 == the uninterrupted run."""
    src = runs["root"] / layout / "checkpoints"
    parties = [("leader", n) for n in ("head_loss_net", "embedding_loss_net")] + [
        (stage.name, "backbone_loss_net") for stage in runs[layout]["stages"]]
    for party in sorted({p for p, _ in parties}):
        (tmp_path / "checkpoints" / party).mkdir(parents=True)
        for name in os.listdir(src / party):
            if name.endswith("_step_20.ckpt"):
                shutil.copy(src / party / name, tmp_path / "checkpoints" / party)
    resumed = run_local(_local_args(tmp_path, "--save_ckpt_steps", "10", "--resume", *LAYOUT_FLAGS[layout]))
    assert resumed["final_step"] == STEPS
    np.testing.assert_array_equal(resumed["losses"], runs[layout]["losses"][20:])
    full, again = _split_params(runs[layout]), _split_params(resumed)
    for name in full:
        np.testing.assert_array_equal(again[name], full[name], err_msg=name)
    # optimizer state too: the saved step-30 checkpoints are identical
    for party, name in parties:
        a = ms.load_checkpoint(str(src / party / f"{name}_step_30.ckpt"))
        b = ms.load_checkpoint(str(tmp_path / "checkpoints" / party / f"{name}_step_30.ckpt"))
        assert set(a) == set(b)
        for key in a:
            np.testing.assert_array_equal(a[key].asnumpy(), b[key].asnumpy(), err_msg=key)


# ------------------------------------------------------------------------------ protocol checks
def test_restarted_peer_is_detected_with_both_steps(runs):
    """A handshake arriving mid-run (the peer restarted) stops the party, naming both steps."""
    follower = runs["split"]["follower"]
    leader_end, follower_end = LocalChannel.pair()
    old = follower.channel
    follower.channel = follower_end
    try:
        leader_end.send(make_message(Kind.HELLO, 20, role=np.asarray(1), fingerprint=np.zeros(3)))
        with pytest.raises(ProtocolError, match=r"leader restarted.*step 20.*step 31 \(steps completed: 30\)"):
            follower.serve_one()
        abort = leader_end.recv()                              # the leader is told why
        assert int(abort["meta"]["kind"]) == Kind.ABORT
        leader_end.send(make_message(Kind.BACKWARD, 12))
        with pytest.raises(ProtocolError, match=r"expected FORWARD of step 31, EVAL, DONE of step 30, got BACKWARD "
                                                r"of step 12.*--resume"):
            follower.serve_one()
    finally:
        follower.channel = old


def test_fingerprint_mismatch_names_both_values():
    from src.pangu_alpha_config import get_config
    a = config_fingerprint(get_config("tiny", hidden_size=64))
    b = config_fingerprint(get_config("tiny", hidden_size=128), unknown=("vocab_size",))
    assert describe_settings_mismatch(a, b) == "hidden_size: ours 64, peer 128"
    assert describe_settings_mismatch(a, a) == ""


# ------------------------------------------------------------------------------ bad input
def test_missing_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_url.*no such file or directory"):
        run_pangu_train_local.main(COMMON + ["--data_url", str(tmp_path / "nope"), "--output_dir", str(tmp_path)])


def test_follower_ignores_data_flags_with_one_info_line(tmp_path, caplog):
    """The leader's command line works for the follower: its data flags are dropped, not used."""
    import logging
    import run_pangu_train_follower
    with caplog.at_level(logging.INFO):
        args = run_pangu_train_follower.parse_args(COMMON + ["--data_url", str(tmp_path), "--synthetic",
                                                             "--vocab_model", str(tmp_path / "v.model")])
    assert args.data_url is None and not args.synthetic and args.vocab_model is None
    lines = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert lines == ["follower: ignoring --data_url, --vocab_model, --synthetic (the data owner's flags; "
                     "party B holds no data)"]


# ------------------------------------------------------------------------------ two processes
def _pki(root: Path) -> Path:
    from mindspore_federated.tools import gen_certs as g
    ca = g.generate_ca()
    g.write_ca(root, ca, PASSWORD)
    for name in ("leader", "follower", "follower2"):
        g.generate_party_certs(root, name, ca, PASSWORD, ips=["127.0.0.1"])
    return root


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    return _pki(tmp_path_factory.mktemp("pki"))


# The follower child: data access is made impossible, then it runs the follower program and
# reports what it saw.
FOLLOWER_PROBE = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {example!r})
    import mindspore_federated
    import mindspore.dataset as ds
    import mindspore.mindrecord as mr
    def refuse(*a, **k):
        raise AssertionError("the follower opened a dataset")
    ds.MindDataset = refuse
    mr.FileReader = refuse
    import run_pangu_train_follower
    from src.split_train import run_follower
    args = run_pangu_train_follower.parse_args(sys.argv[1:])
    assert not args.data_url and not args.eval_data_url and not args.synthetic
    try:
        res = run_follower(args)
    except Exception as err:
        print("FOLLOWER-ERROR", type(err).__name__, err, flush=True)
        sys.exit(1)
    print("FOLLOWER-RESULT", json.dumps({{"step": res["final_step"], "keys": res["received_keys"],
          "src_dataset_loaded": "src.dataset" in sys.modules}}), flush=True)
""")


def _tls_flags(pki: Path, name: str) -> list:
    """The leader reads its passwords from a file; the follower takes the original's password flags."""
    if name == "leader":
        secret = pki / "password.txt"
        secret.write_text(PASSWORD + "\n")
        passwords = ["--server_password_file", str(secret), "--client_password_file", str(secret)]
    else:
        passwords = ["--server_password", PASSWORD, "--client_password", PASSWORD]
    return ["--enable_ssl", "true", *passwords, "--server_cert_path", str(pki / f"{name}_server.p12"),
            "--client_cert_path", str(pki / f"{name}_client.pem"), "--ca_cert_path", str(pki / "ca.pem")]


def _two_processes(tmp: Path, pki: Path, leader_extra=(), follower_extra=(), timeout=240, leader_tls=None):
    leader_tls = leader_tls if leader_tls is not None else _tls_flags(pki, "leader")
    return run_two_processes(tmp, COMMON, FOLLOWER_PROBE.format(example=str(EXAMPLE_DIR)),
                             (*leader_tls, *leader_extra), (*_tls_flags(pki, "follower"), *follower_extra),
                             timeout)


def test_two_processes_mutual_tls_match_local(runs, pki, tmp_path):
    rc_l, rc_f, out_l, out_f = _two_processes(tmp_path, pki, leader_extra=("--save_ckpt_steps", "0"),
                                              follower_extra=("--save_ckpt_steps", "0"))
    assert rc_l == 0 and rc_f == 0, (out_l[-3000:], out_f[-3000:])
    assert "mutual TLS" in out_l and "mutual TLS" in out_f
    losses = [r["loss"] for r in json.loads((tmp_path / "leader_loss.json").read_text())]
    assert _rel(losses, runs["split"]["losses"]) <= 1e-5
    result = follower_result(out_f)
    assert result["step"] == STEPS
    assert set(result["keys"]) == {"embedding_table", "attention_mask", "output.hidden_states"}
    assert not result["src_dataset_loaded"]
    assert f"epoch 1 step {STEPS}/{STEPS} loss: " in (tmp_path / "leader.log").read_text()
    # passwords: the original's flags work with a warning; never in any log
    assert "--server_password on the command line is visible to every local user" in out_f
    assert "visible to every local user" not in out_l
    for text in (out_l, out_f, (tmp_path / "leader.log").read_text(), (tmp_path / "follower.log").read_text()):
        assert PASSWORD not in text


def test_mismatched_configs_fail_fast_on_both_sides(pki, tmp_path):
    t0 = time.time()
    rc_l, rc_f, out_l, out_f = _two_processes(tmp_path, pki, follower_extra=("--seq_length", "16"), timeout=120)
    assert rc_l == 1 and rc_f == 1
    for out in (out_l, out_f):
        assert "startup handshake failed" in out and "seq_length: ours" in out, out[-2000:]
    assert "seq_length: ours 32, peer 16" in out_l and "seq_length: ours 16, peer 32" in out_f
    assert time.time() - t0 < 90


def test_unreachable_peer_fails_within_seconds(tmp_path, pki):
    t0 = time.time()
    proc = subprocess.run([PYTHON, str(EXAMPLE_DIR / "run_pangu_train_leader.py"),
                           "--http_server_address", f"127.0.0.1:{free_port()}",
                           "--remote_server_address", f"127.0.0.1:{free_port()}", *COMMON, "--synthetic",
                           "--output_dir", str(tmp_path), "--log_file", str(tmp_path / "l.log"),
                           "--peer_timeout", "4", *_tls_flags(pki, "leader")],
                          cwd=str(EXAMPLE_DIR), capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 1
    assert "cannot reach the follower at 127.0.0.1:" in proc.stdout + proc.stderr, proc.stdout[-2000:]
    assert time.time() - t0 < 60


def test_wrong_certificate_password_is_a_clear_error(tmp_path, pki):
    flags = _tls_flags(pki, "leader")
    flags[flags.index("--server_password_file") + 1] = str(tmp_path / "wrong.txt")
    (tmp_path / "wrong.txt").write_text("wrong")
    proc = subprocess.run([PYTHON, str(EXAMPLE_DIR / "run_pangu_train_leader.py"), *COMMON, "--synthetic",
                           "--output_dir", str(tmp_path), "--log_file", str(tmp_path / "l.log"),
                           "--http_server_address", f"127.0.0.1:{free_port()}", *flags],
                          cwd=str(EXAMPLE_DIR), capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 1
    text = proc.stdout + proc.stderr
    assert "leader stopped" in text and "password" in text.lower(), text[-2000:]


# ------------------------------------------------------------------------------ slow: stop / restart
def _wait_for(paths, procs, timeout=240.0) -> None:
    t0 = time.time()
    while not all(p.exists() for p in paths):
        assert all(p.poll() is None for p in procs), "a party exited early"
        assert time.time() - t0 < timeout, f"timed out waiting for {paths}"
        time.sleep(0.1)


def _party_cmds(tmp: Path, pki: Path, pl: int, pf: int, resume: bool):
    out = tmp / "out"
    extra = ["--save_ckpt_steps", "20", "--output_dir", str(out), "--peer_timeout", "60"] + (["--resume"] if resume else [])
    tag = "2" if resume else "1"
    follower = [PYTHON, str(EXAMPLE_DIR / "run_pangu_train_follower.py"), "--http_server_address", f"127.0.0.1:{pf}",
                "--remote_server_address", f"127.0.0.1:{pl}", *COMMON, *extra, "--log_file",
                str(tmp / f"follower{tag}.log"), *_tls_flags(pki, "follower")]
    leader = [PYTHON, str(EXAMPLE_DIR / "run_pangu_train_leader.py"), "--http_server_address", f"127.0.0.1:{pl}",
              "--remote_server_address", f"127.0.0.1:{pf}", *COMMON, "--synthetic", *extra, "--log_file",
              str(tmp / f"leader{tag}.log"), "--loss_log", str(tmp / "leader_loss.json"), *_tls_flags(pki, "leader")]
    return leader, follower


@pytest.mark.slow
def test_two_processes_stop_both_and_resume(runs, pki, tmp_path):
    """Kill both parties after their step-20 checkpoints, restart both with --resume: steps 21..30
    and the final checkpoints equal the uninterrupted run's."""
    pl, pf = free_port(), free_port()
    leader_cmd, follower_cmd = _party_cmds(tmp_path, pki, pl, pf, resume=False)
    procs = [start(follower_cmd, tmp_path / "f1.out"), start(leader_cmd, tmp_path / "l1.out")]
    ck = tmp_path / "out" / "checkpoints"
    try:
        _wait_for([ck / "leader" / "head_loss_net_step_20.ckpt", ck / "follower" / "backbone_loss_net_step_20.ckpt"],
                  procs)
        time.sleep(1.0)  # let them run into step 21+ before the "crash"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert not (ck / "leader" / "head_loss_net_step_30.ckpt").exists()
    leader_cmd, follower_cmd = _party_cmds(tmp_path, pki, pl, pf, resume=True)
    procs = [start(follower_cmd, tmp_path / "f2.out"), start(leader_cmd, tmp_path / "l2.out")]
    rcs = [p.wait(300) for p in procs]
    assert rcs == [0, 0], ((tmp_path / "l2.out").read_text()[-3000:], (tmp_path / "f2.out").read_text()[-3000:])
    records = json.loads((tmp_path / "leader_loss.json").read_text())
    resumed = [r["loss"] for r in records if r["step"] > 20]
    np.testing.assert_array_equal(resumed, runs["split"]["losses"][20:])
    ref = runs["root"] / "split" / "checkpoints"
    for party, name in (("leader", "embedding_loss_net"), ("leader", "head_loss_net"),
                        ("follower", "backbone_loss_net")):
        a = ms.load_checkpoint(str(ref / party / f"{name}_step_30.ckpt"))
        b = ms.load_checkpoint(str(ck / party / f"{name}_step_30.ckpt"))
        assert set(a) == set(b)
        for key in a:
            np.testing.assert_array_equal(a[key].asnumpy(), b[key].asnumpy(), err_msg=f"{name}: {key}")


@pytest.mark.slow
def test_follower_restarted_mid_run_stops_both_naming_steps(pki, tmp_path):
    pl, pf = free_port(), free_port()
    leader_cmd, follower_cmd = _party_cmds(tmp_path, pki, pl, pf, resume=False)
    follower = start(follower_cmd, tmp_path / "f1.out")
    leader = start(leader_cmd, tmp_path / "l1.out")
    try:
        _wait_for([tmp_path / "out" / "checkpoints" / "follower" / "backbone_loss_net_step_20.ckpt"],
                  [leader, follower])
        time.sleep(1.0)
        follower.kill()
        follower.wait()
        _, follower_cmd = _party_cmds(tmp_path, pki, pl, pf, resume=True)
        t0 = time.time()
        restarted = start(follower_cmd, tmp_path / "f2.out")
        rc_f, rc_l = restarted.wait(120), leader.wait(120)
    finally:
        for proc in (leader, follower):
            if proc.poll() is None:
                proc.kill()
    out_l, out_f = (tmp_path / "l1.out").read_text(), (tmp_path / "f2.out").read_text()
    assert rc_l == 1 and rc_f == 1, (out_l[-2000:], out_f[-2000:])
    assert time.time() - t0 < 90
    # each side names the steps: the restarted follower is at 20, the leader further on
    assert "follower restarted" in out_l or "mid-run" in out_f, (out_l[-2000:], out_f[-2000:])
    assert "step 20" in out_l + out_f
    assert "leader stopped" in out_l and "follower stopped" in out_f


@pytest.mark.slow
def test_a_party_stopped_by_sigterm_tells_the_other_why(pki, tmp_path):
    """SIGTERM to the follower mid-run: it sends ABORT first; the leader stops within seconds, naming
    the reason and the remedy (--resume)."""
    import signal
    pl, pf = free_port(), free_port()
    leader_cmd, follower_cmd = _party_cmds(tmp_path, pki, pl, pf, resume=False)
    follower = start(follower_cmd, tmp_path / "f1.out")
    leader = start(leader_cmd, tmp_path / "l1.out")
    try:
        _wait_for([tmp_path / "out" / "checkpoints" / "follower" / "backbone_loss_net_step_20.ckpt"],
                  [leader, follower])
        follower.send_signal(signal.SIGTERM)
        t0 = time.time()
        rc_f, rc_l = follower.wait(60), leader.wait(60)
        elapsed = time.time() - t0
    finally:
        for proc in (leader, follower):
            if proc.poll() is None:
                proc.kill()
    out_l = (tmp_path / "l1.out").read_text()
    assert rc_f != 0 and rc_l == 1, out_l[-2000:]
    assert elapsed < 20
    # the follower's own words reach the leader (its ABORT, or the transport's goodbye quoting it)
    assert "the follower was interrupted: SystemExit: stopped by SIGTERM" in out_l, out_l[-2000:]
    # it was receiving (the ABORT: "the follower stopped") or sending (the goodbye: "gone ... said why")
    assert re.search(r"leader stopped: the follower (stopped:|at \S+ is gone: .* it stopped and said why:)", out_l), \
        out_l[-2000:]
    assert "restart both with --resume" in out_l


@pytest.mark.slow
def test_two_processes_with_the_split_point_moved(runs, pki, tmp_path):
    """--leader_layers 1 across two processes over mutual TLS == the one-process k=1 run."""
    flags = ("--save_ckpt_steps", "0", "--leader_layers", "1")
    rc_l, rc_f, out_l, out_f = _two_processes(tmp_path, pki, leader_extra=flags, follower_extra=flags)
    assert rc_l == 0 and rc_f == 0, (out_l[-3000:], out_f[-3000:])
    losses = [r["loss"] for r in json.loads((tmp_path / "leader_loss.json").read_text())]
    assert _rel(losses, runs["split_k1"]["losses"]) <= 1e-5


@pytest.mark.slow
def test_split_point_mismatch_fails_fast_on_both_sides(pki, tmp_path):
    rc_l, rc_f, out_l, out_f = _two_processes(tmp_path, pki, leader_extra=("--leader_layers", "1"), timeout=120)
    assert rc_l != 0 and rc_f != 0
    for out in (out_l, out_f):
        assert "leader_layers: ours" in out, out[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["split", "pipeline"])
def test_graph_mode_local_split_matches_centralised(runs, tmp_path, layout):
    """GRAPH_MODE parties (compiled backward + optimizer, fused head forward+backward) compute
    the same training as the centralised PyNative run of the fixture (also with B as 2 stages)."""
    old_mode = ms.get_context("mode")
    try:
        split = run_local(_local_args(tmp_path, "--exec_mode", "graph", "--eval_steps", "1", *LAYOUT_FLAGS[layout]))
    finally:
        ms.set_context(mode=old_mode)
    assert _rel(split["losses"], runs["central"]["losses"]) <= 1e-5


def test_graph_mode_trains_a_deep_backbone(tmp_path):
    """16 blocks at party B (every preset from 350M up has 15 or more): its compiled backward stores
    ~260 gradients, which once unrolled into nested calls past MindSpore's call-depth limit and
    failed to compile. It now compiles and trains like the centralised PyNative run."""
    deep = ["--mode", "self_define", "--num_layers", "17", "--embedding_size", "16", "--num_heads", "2",
            "--seq_length", "8", "--vocab_size", "100", "--seed", "3", "--train_steps", "2", "--dropout_rate", "0",
            "--loss_scale", "1024", "--eval_steps", "1", "--save_ckpt_steps", "0", "--run_config", "none",
            "--synthetic"]
    old_mode = ms.get_context("mode")
    try:
        split = run_local(run_pangu_train_local.parse_args(deep + [
            "--exec_mode", "graph", "--output_dir", str(tmp_path / "split"), "--log_file", ""]))
        central = train_centralized.run(train_centralized.parse_args(deep + [
            "--exec_mode", "pynative", "--output_dir", str(tmp_path / "central")]))
    finally:
        ms.set_context(mode=old_mode)
    assert split["follower"].num_parameters() > 0 and len(split["losses"]) == 2
    assert _rel(split["losses"], central["losses"]) <= 1e-5


def _start_pipeline(tmp: Path, pki: Path, common: list, stage_flags: list) -> list:
    """The leader and one follower process per entry of `stage_flags` (pipeline stage i, its extra
    flags), chained on loopback over mutual TLS; the processes, leader first."""
    pl, ports = free_port(), [free_port() for _ in stage_flags]
    procs = []
    for i, flags in reversed(list(enumerate(stage_flags))):   # the last stage first
        name = "follower" if i == 0 else f"follower{i + 1}"
        nxt = ["--next_stage_address", f"127.0.0.1:{ports[i + 1]}"] if i + 1 < len(stage_flags) else []
        procs.insert(0, start([PYTHON, str(EXAMPLE_DIR / "run_pangu_train_follower.py"), *common, "--stage_index",
                               str(i), "--http_server_address", f"127.0.0.1:{ports[i]}", "--remote_server_address",
                               f"127.0.0.1:{pl if i == 0 else ports[i - 1]}", *nxt, "--log_file",
                               str(tmp / f"{name}.log"), *_tls_flags(pki, name), *flags], tmp / f"{name}.out"))
    procs.insert(0, start([PYTHON, str(EXAMPLE_DIR / "run_pangu_train_leader.py"), *common, "--synthetic",
                           "--http_server_address", f"127.0.0.1:{pl}", "--remote_server_address",
                           f"127.0.0.1:{ports[0]}", "--log_file", str(tmp / "leader.log"), "--loss_log",
                           str(tmp / "loss.json"), *_tls_flags(pki, "leader")], tmp / "leader.out"))
    return procs


def _wait_all(tmp: Path, procs: list, timeout: float = 300):
    """Exit codes and outputs of `_start_pipeline`'s processes, leader first."""
    try:
        rcs = [p.wait(timeout) for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    names = ["leader", "follower"] + [f"follower{i + 1}" for i in range(1, len(procs) - 1)]
    return rcs, [(tmp / f"{name}.out").read_text() for name in names]


@pytest.mark.slow
def test_pipeline_as_three_processes_over_mutual_tls(runs, pki, tmp_path):
    """The leader (unchanged) + stage 0 (follower, relays) + stage 1 (follower2), three processes over
    mutual TLS on loopback: the losses of the centralised run; each stage saves its own blocks."""
    out = tmp_path / "out"
    common = [*COMMON, "--output_dir", str(out), "--peer_timeout", "60", "--save_ckpt_steps", str(STEPS),
              "--pipeline_stages", "2"]
    rcs, outs = _wait_all(tmp_path, _start_pipeline(tmp_path, pki, common, [[], []]))
    assert rcs == [0, 0, 0], [o[-2000:] for o in outs]
    losses = [r["loss"] for r in json.loads((tmp_path / "loss.json").read_text())]
    assert _rel(losses, runs["central"]["losses"]) <= 1e-5
    assert "follower2 done at step 30" in outs[2] and "mutual TLS" in outs[2]
    for stage_dir in ("follower", "follower2"):
        assert (out / "checkpoints" / stage_dir / f"backbone_loss_net_step_{STEPS}.ckpt").is_file()


@pytest.mark.slow
def test_pipeline_mis_split_stops_every_process(pki, tmp_path):
    """Stage 1 started for a 3-stage pipeline behind a 2-stage stage 0: refused at the stages'
    handshake, and the leader stops too, with the reason."""
    common = [*COMMON, "--output_dir", str(tmp_path / "out"), "--peer_timeout", "60", "--save_ckpt_steps", "0",
              "--num_layers", "4"]
    third = ["--next_stage_address", f"127.0.0.1:{free_port()}"]   # (stage 1 of 3 is no last stage)
    procs = _start_pipeline(tmp_path, pki, common, [["--pipeline_stages", "2"], ["--pipeline_stages", "3", *third]])
    rcs, outs = _wait_all(tmp_path, procs, timeout=120)
    assert all(rc != 0 for rc in rcs), [o[-2000:] for o in outs]
    assert "pipeline_stages: ours 3, peer 2" in outs[2], outs[2][-2000:]
    assert "pipeline_stages: ours 2, peer 3" in outs[1] or "pipeline_stages: ours 3, peer 2" in outs[1], outs[1][-2000:]
    assert "follower2 stopped:" in outs[2] and "follower stopped: between the follower and the follower2:" in outs[1]
    assert "leader stopped: the follower stopped: between the follower and the follower2: " in outs[0], outs[0][-2000:]
    assert "pipeline_stages" in outs[0]


@pytest.mark.slow
def test_pipeline_last_stage_stopped_stops_every_process_with_its_reason(pki, tmp_path):
    """SIGTERM to stage 1 (follower2) mid-run: it tells stage 0, which tells the leader; all three
    stop within seconds, the leader naming follower2's own reason."""
    import signal
    out = tmp_path / "out"
    common = [*COMMON, "--output_dir", str(out), "--peer_timeout", "60", "--save_ckpt_steps", "10",
              "--pipeline_stages", "2", "--train_steps", "1000"]
    procs = _start_pipeline(tmp_path, pki, common, [[], []])
    try:
        _wait_for([out / "checkpoints" / "follower2" / "backbone_loss_net_step_10.ckpt"], procs)
        procs[2].send_signal(signal.SIGTERM)
        t0 = time.time()
        rcs, outs = _wait_all(tmp_path, procs, timeout=60)
        elapsed = time.time() - t0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert all(rc != 0 for rc in rcs), [o[-2000:] for o in outs]
    assert elapsed < 30
    reason = "the follower2 was interrupted: SystemExit: stopped by SIGTERM"
    assert f"follower stopped: the follower2 stopped: {reason}" in outs[1], outs[1][-2000:]
    assert f"leader stopped: the follower stopped: the follower2 stopped: {reason}" in outs[0], outs[0][-2000:]
    assert "restart all with --resume" in outs[0]
