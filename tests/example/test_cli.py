"""The PanGu programs' command line: the original's flags, the run configuration, passwords, --help."""
from __future__ import annotations

import logging
import subprocess
import sys
import time

import pytest

import run_pangu_train_follower
import run_pangu_train_leader
import run_pangu_train_local
from src.cli import DEFAULT_RUN_CONFIG
from tests.example.two_party import EXAMPLE_DIR, REPO


@pytest.mark.parametrize("program", ["local", "leader", "follower"])
def test_help_answers_without_importing_mindspore(program):
    code = (f"import sys, time; sys.path.insert(0, {str(EXAMPLE_DIR)!r}); t = time.time()\n"
            f"import run_pangu_train_{program} as p\n"
            f"try:\n    p.parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print('MS' if 'mindspore' in sys.modules else 'NO-MS', round(time.time() - t, 2))")
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "--run_config" in out.stdout and out.stdout.strip().splitlines()[-1].startswith("NO-MS")
    assert time.time() - t0 < 5


def test_all_three_programs_read_the_same_run_configuration():
    parsed = [m.parse_args(["--synthetic"]) for m in (run_pangu_train_local, run_pangu_train_leader)]
    parsed.append(run_pangu_train_follower.parse_args([]))
    keys = ("mode", "exec_mode", "train_steps", "per_batch_size", "start_lr", "dropout_rate", "loss_scale", "log_steps",
            "save_ckpt_steps", "seed")
    values = [{k: getattr(a, k) for k in keys} for a in parsed]
    assert values[0] == values[1] == values[2]
    assert values[0]["train_steps"] == 1000 and values[0]["per_batch_size"] == 32 and values[0]["start_lr"] == 0.003
    assert values[0]["dropout_rate"] == 0.0 and values[0]["save_ckpt_steps"] == 250
    assert all(a.run_config == DEFAULT_RUN_CONFIG for a in parsed)
    # per layout outputs
    assert [a.output_dir for a in parsed] == ["output/local", "output/leader", "output/follower"]
    # a flag on the command line wins over the file
    assert run_pangu_train_leader.parse_args(["--synthetic", "--train_steps", "7"]).train_steps == 7


def test_run_configuration_errors_name_the_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train_step: 5\n")
    with pytest.raises(SystemExit):
        run_pangu_train_leader.parse_args(["--synthetic", "--run_config", str(bad)])
    assert f"--run_config {bad}: unknown setting 'train_step' (did you mean 'train_steps'?)" in capsys.readouterr().err
    bad.write_text("train_steps: many\n")
    with pytest.raises(SystemExit):
        run_pangu_train_leader.parse_args(["--synthetic", "--run_config", str(bad)])
    assert "--train_steps: invalid int value: 'many'" in capsys.readouterr().err


def test_mode_is_the_model_scale_as_in_the_original(caplog):
    from src.utils import config_from_args
    args = run_pangu_train_leader.parse_args(["--synthetic", "--mode", "350M", "--run_config", "none"])
    assert args.mode == "350M" and args.exec_mode == "graph"
    assert config_from_args(args).hidden_size == 1280
    args = run_pangu_train_leader.parse_args(["--synthetic", "--mode", "self_define", "--num_layers", "3",
                                              "--embedding_size", "64", "--num_heads", "4", "--seq_length", "16"])
    cfg = config_from_args(args)
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.ffn_hidden_size) == (3, 64, 4, 256)
    with caplog.at_level(logging.WARNING):
        args = run_pangu_train_leader.parse_args(["--synthetic", "--mode", "graph"])
    assert args.exec_mode == "graph" and args.mode == "tiny"
    assert "--mode is the model scale" in caplog.text


def test_the_original_flags_are_accepted_and_unused_ones_named_once(caplog, tmp_path):
    (tmp_path / "vocab.model").write_bytes(b"x")
    original = ["--data_url", "d", "--eval_data_url", "e", "--run_type", "train", "--device_target", "CPU",
                "--tokenizer_path", str(tmp_path), "--embedding_dp", "True", "--eval_steps", "10",
                "--train_and_eval_mode", "1", "--warmup_step", "5", "--stage_num", "2", "--use_moe", "0",
                "--save_checkpoint_steps", "50", "--epoch_size", "1", "--resume", "False",
                "--optimizer", "adam", "--enable_ssl=False", "--http_server_address=127.0.0.1:5555"]
    with caplog.at_level(logging.WARNING):
        args = run_pangu_train_leader.parse_args(original)
    assert args.embedding_dp is True and args.warmup_steps == 5 and args.save_ckpt_steps == 50
    assert args.vocab_model == str(tmp_path / "vocab.model")
    warnings = [r.getMessage() for r in caplog.records if "not used here" in r.getMessage()]
    assert len(warnings) == 1 and "--stage_num 2" in warnings[0] and "--train_and_eval_mode 1" in warnings[0]
    assert "--use_moe" not in warnings[0] and "--optimizer" not in warnings[0]    # the original's defaults
    assert run_pangu_train_leader.parse_args(["--run_type", "predict"]).run_type == "predict"  # needs no data


def test_passwords_from_file_environment_or_flag(tmp_path, monkeypatch, caplog):
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    monkeypatch.setenv("MSF_CLIENT_PASSWORD", "from-env")
    monkeypatch.delenv("MSF_SERVER_PASSWORD", raising=False)
    monkeypatch.delenv("MSF_CERT_PASSWORD", raising=False)
    with caplog.at_level(logging.WARNING):
        args = run_pangu_train_follower.parse_args(["--server_password_file", str(secret)])
    assert (args.server_password, args.client_password) == ("from-file", "from-env")
    assert "visible" not in caplog.text
    monkeypatch.delenv("MSF_CLIENT_PASSWORD")
    monkeypatch.setenv("MSF_CERT_PASSWORD", "shared")
    args = run_pangu_train_follower.parse_args([])
    assert (args.server_password, args.client_password) == ("shared", "shared")
    with caplog.at_level(logging.WARNING):
        args = run_pangu_train_follower.parse_args(["--server_password", "on-the-line"])
    assert args.server_password == "on-the-line"
    assert "--server_password on the command line is visible to every local user (ps)" in caplog.text
    assert "on-the-line" not in caplog.text
    with pytest.raises(ValueError, match="--client_password_file: cannot read"):
        run_pangu_train_follower.parse_args(["--client_password_file", str(tmp_path / "missing")])


def test_shell_scripts_keep_the_positional_arguments(tmp_path):
    """The original's positional form: passwords go to Python through the environment, not argv."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/bash\necho \"ARGV $*\"\necho \"ENV $MSF_SERVER_PASSWORD $MSF_CLIENT_PASSWORD\"\n")
    fake.chmod(0o755)
    script = tmp_path / "run.sh"
    # run the real script with _common.sh's interpreter replaced by the fake one
    source = (EXAMPLE_DIR / "run_pangu_train_leader.sh").read_text().replace(
        'source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"',
        f'source {EXAMPLE_DIR / "_common.sh"}; PYTHON={fake}')
    script.write_text(source)
    out = subprocess.run(["bash", str(script), "127.0.0.1:1", "127.0.0.1:2", "tr", "ev", "true", "spw", "cpw",
                          "s.p12", "c.p12", "ca.pem", "True", "--train_steps", "3"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "ENV spw cpw" in out.stdout
    argv = out.stdout.splitlines()[0]
    assert "spw" not in argv and "--server_cert_path s.p12" in argv and "--embedding_dp True" in argv
    assert argv.endswith("--train_steps 3")
    assert "visible to every local user" in out.stderr
