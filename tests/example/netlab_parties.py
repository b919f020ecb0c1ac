"""The PanGu-alpha leader and follower as two processes in a NetLab (two network namespaces).

Used by tests/example/test_split_netlab.py and benchmarks/bench_network.py: certificates for the
lab's addresses, the two command lines, progress from the leader's log, kill -9 and --resume.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from mindspore_federated.tools.netlab import NetLab
from tests.example.two_party import EXAMPLE_DIR, REPO

PASSWORD = "netlab-test-pw"
PARTIES = ("leader", "follower")
SCRIPTS = {"leader": "run_pangu_train_leader.py", "follower": "run_pangu_train_follower.py"}
# the checkpoint files each party writes per saved step
CKPT_NAMES = {"leader": ("embedding_loss_net", "head_loss_net"), "follower": ("backbone_loss_net",)}
_STEP_LINE = re.compile(r"^epoch \d+ step (\d+)/\d+ loss: (\S+)$", re.MULTILINE)


def make_pki(root: Path, lab: NetLab) -> Path:
    """A CA and each party's server/client certificates; a server certificate carries the party's
    lab address, which is what its peer dials (through the relay)."""
    from mindspore_federated.tools import gen_certs as g
    root.mkdir(parents=True, exist_ok=True)
    ca = g.generate_ca()
    g.write_ca(root, ca, PASSWORD)
    for party in PARTIES:
        g.generate_party_certs(root, party, ca, PASSWORD, ips=[lab.ip(party)])
    return root


def tls_flags(pki: Path, party: str) -> List[str]:
    return ["--enable_ssl", "true", "--server_password", PASSWORD, "--client_password", PASSWORD,
            "--server_cert_path", str(pki / f"{party}_server.p12"),
            "--client_cert_path", str(pki / f"{party}_client.pem"), "--ca_cert_path", str(pki / "ca.pem")]


class LabParties:
    """Start, watch, kill and resume the two parties of one training run inside ``lab``.

    ``common``: flags both programs get (model and run settings); the leader also gets
    ``--synthetic`` and ``--loss_log``. Every start writes ``<party><n>.out`` under ``work``.
    """

    def __init__(self, lab: NetLab, work: Path, pki: Path, common: Sequence[str],
                 leader_extra: Sequence[str] = (), follower_extra: Sequence[str] = ()) -> None:
        self.lab, self.work, self.pki = lab, work, pki
        self.common = list(common)
        self.extra = {"leader": list(leader_extra), "follower": list(follower_extra)}
        self.out_dir = work / "out"
        self.loss_log = work / "leader_loss.json"
        self.procs: Dict[str, subprocess.Popen] = {}
        self.outputs: Dict[str, List[Path]] = {p: [] for p in PARTIES}
        work.mkdir(parents=True, exist_ok=True)

    def command(self, party: str, resume: bool = False) -> List[str]:
        cmd = [sys.executable, str(EXAMPLE_DIR / SCRIPTS[party]),
               "--http_server_address", self.lab.listen_address(party),
               "--remote_server_address", self.lab.dial_address(party),
               *self.common, "--output_dir", str(self.out_dir), "--log_file", "",
               *tls_flags(self.pki, party), *self.extra[party]]
        if party == "leader":
            cmd += ["--synthetic", "--loss_log", str(self.loss_log)]
        if resume:
            cmd.append("--resume")
        return cmd

    def start(self, party: str, resume: bool = False) -> subprocess.Popen:
        out = self.work / f"{party}{len(self.outputs[party]) + 1}.out"
        self.outputs[party].append(out)
        env = dict(os.environ, PYTHONPATH=str(REPO), GLOG_v="3")
        with open(out, "w", encoding="utf-8") as sink:
            proc = self.lab.popen(party, self.command(party, resume), cwd=str(EXAMPLE_DIR), stdout=sink,
                                  stderr=subprocess.STDOUT, env=env)
        self.procs[party] = proc
        return proc

    def start_both(self, resume: bool = False) -> None:
        self.start("follower", resume)
        self.start("leader", resume)

    def wait_both(self, timeout: float) -> Tuple[int, int]:
        """Exit codes (leader, follower); kills both if they run past ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        codes = []
        for party in PARTIES:
            try:
                codes.append(self.procs[party].wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                self.kill_all()
                raise AssertionError(f"the {party} still ran after {timeout:g} s:\n{self.tail(party)}") from None
        return codes[0], codes[1]

    def kill(self, party: str) -> None:
        """kill -9, as a crash would."""
        proc = self.procs[party]
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def kill_all(self) -> None:
        for party in PARTIES:
            if party in self.procs:
                self.kill(party)

    def output(self, party: str) -> str:
        return self.outputs[party][-1].read_text(encoding="utf-8", errors="replace")

    def tail(self, party: str, chars: int = 3000) -> str:
        return self.output(party)[-chars:] if self.outputs[party] else ""

    def logged_losses(self, party_output: Optional[str] = None) -> Dict[int, str]:
        """step -> loss as logged (6 decimals) by the leader's latest start (or the given output)."""
        text = self.output("leader") if party_output is None else party_output
        return {int(s): loss for s, loss in _STEP_LINE.findall(text)}

    def wait_for_step(self, step: int, timeout: float) -> None:
        """Until the leader logged ``step`` (needs --log_steps 1); fails if a party exits first."""
        deadline = time.monotonic() + timeout
        while not self.logged_losses() or max(self.logged_losses()) < step:
            for party, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"the {party} exited ({proc.returncode}) before step {step}:\n"
                                         f"{self.tail(party)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"step {step} not reached within {timeout:g} s:\n{self.tail('leader')}")
            time.sleep(0.05)

    def losses(self) -> List[float]:
        return [r["loss"] for r in json.loads(self.loss_log.read_text())]

    # --- checkpoints ---------------------------------------------------------------------------
    def checkpoint_dir(self, party: str) -> Path:
        return self.out_dir / "checkpoints" / party

    def saved_steps(self, party: str) -> set:
        """Steps for which ``party`` holds all its checkpoint files."""
        directory = self.checkpoint_dir(party)
        if not directory.is_dir():
            return set()
        steps = None
        for name in CKPT_NAMES[party]:
            found = {int(m.group(1)) for f in os.listdir(directory)
                     for m in [re.match(rf"^{name}_step_(\d+)\.ckpt$", f)] if m}
            steps = found if steps is None else steps & found
        return steps or set()

    def align_checkpoints(self) -> int:
        """Remove checkpoints of steps that only one party holds (a kill between the two parties'
        saves of a step); returns the newest step both hold (0 if none), which --resume picks."""
        common = self.saved_steps("leader") & self.saved_steps("follower")
        newest = max(common) if common else 0
        for party in PARTIES:
            directory = self.checkpoint_dir(party)
            if not directory.is_dir():
                continue
            for name in os.listdir(directory):
                match = re.search(r"_step_(\d+)\.ckpt$", name)
                if match and int(match.group(1)) > newest:
                    os.remove(directory / name)
        return newest
