"""A follower FLModel as a 2-worker msrun job equals the single-process follower."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def msrun(script: Path, args, log_dir: Path, workers: int = 2, timeout: float = 300):
    """Run ``script`` as a ``workers``-process msrun job on this machine; returns the process."""
    env = dict(os.environ, PYTHONPATH=str(REPO), GLOG_v="2",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(Path(sys.executable).parent / "msrun"), "--worker_num", str(workers), "--local_worker_num",
           str(workers), "--master_port", str(_free_port()), "--join", "True", "--log_dir", str(log_dir),
           str(script), *args]
    return subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=timeout)


def _logs(log_dir: Path) -> str:
    return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(log_dir.glob("*.log")))


def test_two_msrun_workers_equal_the_single_process_follower(tmp_path):
    proc = msrun(REPO / "tests" / "trainer" / "dp_worker.py", [str(tmp_path)], tmp_path / "logs")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + _logs(tmp_path / "logs")
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["size"] == 2
    for mode in ("graph", "pynative"):
        diffs = result[mode]
        # slices summed over ranks vs one full-batch reduction: equal up to float summation order
        assert diffs["hf"] <= 1e-6 and diffs["dxf"] <= 1e-6, (mode, diffs)
        assert diffs["weights"] <= 1e-5, (mode, diffs)
    scheduler = (tmp_path / "logs" / "scheduler.log").read_text(errors="replace")
    assert "time out" not in scheduler.lower() and "timeout" not in scheduler.lower(), scheduler[-2000:]
