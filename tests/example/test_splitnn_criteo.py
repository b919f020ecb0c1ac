"""The Wide&Deep split example: its AUC, the Criteo preprocessing, and the main command as written."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "example" / "splitnn_criteo"


def _module(name):
    if str(EXAMPLE) not in sys.path:
        sys.path.append(str(EXAMPLE))  # after the PanGu example's path: no name is shared
    spec = importlib.util.spec_from_file_location(f"criteo_{name}", EXAMPLE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_roc_auc_equals_the_pairwise_definition():
    roc_auc = _module("wide_and_deep").roc_auc
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + labels * 0.3, 1)  # many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(labels, scores) == pytest.approx(pairs / (len(pos) * len(neg)), abs=1e-12)


def test_preprocess_criteo_splits_fields_between_the_parties(tmp_path):
    rng = np.random.default_rng(1)
    lines = []
    for i in range(50):
        ints = [str(v) if v >= 0 else "" for v in rng.integers(-2, 500, 13)]
        cats = [f"{v:08x}" if v % 7 else "" for v in rng.integers(0, 2 ** 32, 26)]
        lines.append("\t".join([str(i % 2)] + ints + cats))
    source = tmp_path / "train.txt"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "raw"
    subprocess.run([sys.executable, str(EXAMPLE / "preprocess_criteo.py"), str(source), "--output_dir", str(out),
                    "--vocab_size", "1000", "--overlap", "0.6", "--eval_fraction", "0.2"], check=True,
                   cwd=str(EXAMPLE), capture_output=True)
    import csv

    tables = {}
    for role in ("leader", "follower"):
        rows = []
        for split in ("train", "eval"):
            with open(out / role / split / "part_0.csv") as handle:
                rows += list(csv.DictReader(handle))
        tables[role] = {row["oaid"]: row for row in rows}
    leader, follower = tables["leader"], tables["follower"]
    assert set(leader) | set(follower) == {f"criteo-{i:09d}" for i in range(50)}
    assert 0 < len(set(leader) & set(follower)) < 50
    row = next(iter(leader.values()))
    assert {k for k in row if k.startswith("feat_ids_")} == {f"feat_ids_{f}" for f in list(range(7)) + list(range(13, 26))}
    assert "label" in row and "label" not in next(iter(follower.values()))
    for key, row in leader.items():
        assert row["label"] == str(int(key[-9:]) % 2)
        assert all(0 <= int(row[f"feat_ids_{f}"]) < 1000 for f in range(7))


def _run_demo(tmp_path, *flags, timeout):
    result = subprocess.run(["bash", str(EXAMPLE / "run_demo.sh"), "--workdir", str(tmp_path / "work"), *flags],
                            capture_output=True, text=True, timeout=timeout)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    return log


def test_main_command_joins_and_trains(tmp_path):
    """run_demo.sh as documented, with fewer samples and one epoch (the full run is the slow test)."""
    log = _run_demo(tmp_path, "--train_samples", "1500", "--eval_samples", "700", "--epochs", "1", timeout=600)
    shared = [int(n) for n in re.findall(r"shared (\d+);", log)]
    joined = [int(n) for n in re.findall(r"data join done in [\d.]+ s: (\d+) ids in common", log)]
    assert joined == shared  # the leader joined exactly the ids the generator made common
    assert "mutual TLS" in log
    assert re.search(r"epoch 0 auc: 0\.\d+", log), log[-3000:]
    assert (tmp_path / "work" / "checkpoints").is_dir()
    _check_handshake_refuses_different_settings(tmp_path / "work" / "joined")


def _check_handshake_refuses_different_settings(joined):
    """The two-process training programs on the joined data, the follower with another --emb_dim:
    both stop at the handshake (exit 1), and each log names the setting with both values."""
    import socket

    socks = [socket.socket() for _ in range(2)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    leader_port, follower_port = (sock.getsockname()[1] for sock in socks)
    for sock in socks:
        sock.close()
    ckpt = ["--ckpt_path", str(joined.parent / "ckpt")]
    follower = subprocess.Popen(
        ["bash", str(EXAMPLE / "run_vfl_train_follower.sh"), f"127.0.0.1:{follower_port}",
         f"127.0.0.1:{leader_port}", str(joined / "follower"), "--emb_dim", "8", *ckpt],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    leader = subprocess.run(["bash", str(EXAMPLE / "run_vfl_train_leader.sh"), f"127.0.0.1:{leader_port}",
                             f"127.0.0.1:{follower_port}", str(joined / "leader"), *ckpt],
                            capture_output=True, text=True, timeout=300)
    follower_log = follower.communicate(timeout=120)[0]
    assert leader.returncode == 1 and follower.returncode == 1, (leader.stderr[-3000:], follower_log[-3000:])
    assert "leader ERROR: leader stopped: startup handshake failed" in leader.stderr
    assert "emb_dim: ours 16, peer 8" in leader.stderr
    assert "emb_dim: ours 8, peer 16" in follower_log


@pytest.mark.slow
def test_main_command_default_sizes_learns(tmp_path):
    log = _run_demo(tmp_path, timeout=1800)
    aucs = [float(a) for a in re.findall(r"epoch \d+ auc: ([\d.]+)", log)]
    assert len(aucs) == 4 and aucs[-1] > 0.75, aucs
