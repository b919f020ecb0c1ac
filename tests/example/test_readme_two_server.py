"""The example README's two-server commands (and its three-server pipeline ones), run as written.

The block between `<!-- two-server:start -->` and `<!-- two-server:end -->` (`pipeline:`) is
executed by bash from a copy of the repository root (so the certificates, outputs and logs it
writes stay in a temporary folder), with `RUN_CONFIG` pointing at a 6-step copy of
config/main_job.yaml -- the knob the README itself shows. The leader's losses must equal the local
run's under the same file.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.example.two_party import EXAMPLE_DIR, REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
STEPS = 6


def _block(name: str = "two-server") -> str:
    text = (EXAMPLE_DIR / "README.md").read_text(encoding="utf-8")
    found = re.search(rf"<!-- {name}:start -->\s*```bash\n(.*?)```\s*<!-- {name}:end -->", text, re.S)
    assert found, f"README.md lost its {name} block"
    return found.group(1)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _run_block(tmp_path: Path, name: str):
    """Run README block `name` in a copy of the repository; (example folder, small run config, env)."""
    repo = tmp_path / "repo"
    example = repo / "example" / "splitnn_pangu_alpha"
    shutil.copytree(EXAMPLE_DIR, example, ignore=shutil.ignore_patterns("data", "output", "certs", "__pycache__"))
    (EXAMPLE_DIR / "data").mkdir(exist_ok=True)
    (example / "data").symlink_to(EXAMPLE_DIR / "data")       # built once, shared with the main job
    (repo / ".venv").symlink_to(REPO / ".venv")
    config = (EXAMPLE_DIR / "config" / "main_job.yaml").read_text()
    config = re.sub(r"(?m)^train_steps: .*$", f"train_steps: {STEPS}", config)
    config = re.sub(r"(?m)^eval_steps: .*$", "eval_steps: 2", config)
    config = re.sub(r"(?m)^save_ckpt_steps: .*$", "save_ckpt_steps: 3", config)
    small = tmp_path / "small.yaml"
    small.write_text(config)
    env = dict(os.environ, PYTHONPATH=str(REPO), RUN_CONFIG=str(small), GLOG_v="3")
    env.pop("MSF_CERT_PASSWORD", None)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", _block(name)], cwd=str(repo), env=env,
                          capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return example, small, env


def _local_losses(tmp_path: Path, small: Path, env: dict) -> list:
    local_out = tmp_path / "local"
    local = subprocess.run([sys.executable, str(EXAMPLE_DIR / "run_pangu_train_local.py"), "--run_config", str(small),
                            "--no_centralized", "--plot", "none", "--output_dir", str(local_out)],
                           cwd=str(EXAMPLE_DIR), env=env, capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    return [r["loss"] for r in json.loads((local_out / "split_loss.json").read_text())]


def test_readme_two_server_commands_run_as_written(tmp_path):
    if not (_port_free(10086) and _port_free(10087)):
        pytest.skip("ports 10086/10087 of the README are taken on this machine")
    example, small, env = _run_block(tmp_path, "two-server")
    leader_dir, follower_dir = example / "output" / "leader", example / "output" / "follower"
    assert f"epoch 1 step {STEPS}/{STEPS} loss: " in (leader_dir / "leader.log").read_text()
    assert f"follower done at step {STEPS}" in (follower_dir / "follower.log").read_text()
    # checkpoints at the configured interval, each layout in its own folder
    assert sorted(os.listdir(follower_dir / "checkpoints" / "follower")) == [
        "backbone_loss_net_step_3.ckpt", "backbone_loss_net_step_6.ckpt"]
    assert "head_loss_net_step_6.ckpt" in os.listdir(leader_dir / "checkpoints" / "leader")
    assert "mutual TLS" in (leader_dir / "leader.log").read_text()
    # the same losses as the local run of the same configuration
    two = [r["loss"] for r in json.loads((leader_dir / "loss.json").read_text())]
    assert len(two) == STEPS
    np.testing.assert_array_equal(two, _local_losses(tmp_path, small, env))


def test_readme_pipeline_commands_run_as_written(tmp_path):
    if not all(_port_free(p) for p in (10086, 10087, 10088)):
        pytest.skip("ports 10086-10088 of the README are taken on this machine")
    example, small, env = _run_block(tmp_path, "pipeline")
    out = example / "output"
    assert f"follower done at step {STEPS}" in (out / "follower" / "follower.log").read_text()
    assert f"follower2 done at step {STEPS}" in (out / "follower2" / "follower2.log").read_text()
    for stage in ("follower", "follower2"):
        assert sorted(os.listdir(out / stage / "checkpoints" / stage)) == [
            "backbone_loss_net_step_3.ckpt", "backbone_loss_net_step_6.ckpt"]
    three = [r["loss"] for r in json.loads((out / "leader" / "loss.json").read_text())]
    assert len(three) == STEPS
    # the two-party local run of the same configuration (the stages only move where blocks run)
    np.testing.assert_allclose(three, _local_losses(tmp_path, small, env), rtol=1e-5)
