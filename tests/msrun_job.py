"""Start a script as an msrun job (its scheduler and workers in one process group of their own) and
stop the whole group, so no worker outlives a test."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_msrun(script: str, args: Sequence[str], log_dir: Path, out: Path, cwd: Path = REPO,
                workers: int = 2) -> subprocess.Popen:
    """msrun with ``workers`` local workers; msrun starts ``python``, so the venv's bin comes first."""
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PYTHONPATH=str(REPO), GLOG_v="2", PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(bin_dir / "msrun"), "--worker_num", str(workers), "--local_worker_num", str(workers),
           "--master_port", str(_free_port()), "--join", "True", "--log_dir", str(log_dir), script, *args]
    return subprocess.Popen(cmd, cwd=str(cwd), env=env, stdout=open(out, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """Kill msrun and everything it started (they share its process group)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def logs(log_dir: Path) -> str:
    return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(log_dir.glob("*.log")))
