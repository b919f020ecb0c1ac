"""Launch a leader and a (probed) follower as two real processes on loopback, for the split tests."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence, Tuple

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "example" / "splitnn_pangu_alpha"
REPO = EXAMPLE_DIR.parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(cmd: list, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), GLOG_v="3")
    return subprocess.Popen(cmd, cwd=str(EXAMPLE_DIR), stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)


def run_two_processes(tmp: Path, common: Sequence[str], follower_script: str,
                      leader_extra: Sequence[str] = (), follower_extra: Sequence[str] = (),
                      timeout: float = 240) -> Tuple[int, int, str, str]:
    """Run run_pangu_train_leader.py against `follower_script` (python -c source that runs the
    follower and prints FOLLOWER-RESULT json); returns exit codes and outputs of both."""
    pl, pf = free_port(), free_port()
    out = tmp / "out"
    follower = start([sys.executable, "-c", follower_script,
                      "--http_server_address", f"127.0.0.1:{pf}", "--remote_server_address", f"127.0.0.1:{pl}",
                      *common, "--output_dir", str(out), "--log_file", str(tmp / "follower.log"),
                      "--peer_timeout", "60", *follower_extra], tmp / "follower.out")
    leader = start([sys.executable, str(EXAMPLE_DIR / "run_pangu_train_leader.py"),
                    "--http_server_address", f"127.0.0.1:{pl}", "--remote_server_address", f"127.0.0.1:{pf}",
                    *common, "--synthetic", "--output_dir", str(out), "--log_file", str(tmp / "leader.log"),
                    "--loss_log", str(tmp / "leader_loss.json"), "--peer_timeout", "60", *leader_extra],
                   tmp / "leader.out")
    try:
        rc_l, rc_f = leader.wait(timeout), follower.wait(timeout)
    finally:
        for proc in (leader, follower):
            if proc.poll() is None:
                proc.kill()
    return rc_l, rc_f, (tmp / "leader.out").read_text(), (tmp / "follower.out").read_text()


def follower_result(out: str) -> dict:
    return json.loads(out.split("FOLLOWER-RESULT", 1)[1].strip().splitlines()[0])
