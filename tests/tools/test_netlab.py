"""NetLab: the namespaces, the tbf link, the relays' delay, order and cuts, and the cleanup.

Probes are plain sockets made inside the lab's namespaces (``lab.socket``) by this process.
"""
from __future__ import annotations

import hashlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from mindspore_federated.tools.netlab import NetLab, netlab_unavailable, parse_rate, remove_stale_namespaces

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_WHY = netlab_unavailable()
pytestmark = pytest.mark.skipif(bool(_WHY), reason=f"no network namespaces here: {_WHY}")


def _namespaces() -> set:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


class _Server:
    """Accepts connections on the follower's party port; echoes b'!' for every b'?' and counts bytes."""

    def __init__(self, lab: NetLab, party: str = "follower"):
        self.sock = lab.socket(party)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        host, port = lab.listen_address(party).split(":")
        self.sock.bind((host, int(port)))
        self.sock.listen(8)
        self.received = bytearray()
        self.errors = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            while True:
                try:
                    data = conn.recv(1 << 16)
                except OSError as err:
                    self.errors.append(err)
                    return
                if not data:
                    return
                self.received += data
                if data.endswith(b"?"):
                    conn.sendall(b"!")

    def close(self):
        self.sock.close()


def _client(lab: NetLab, party: str = "leader") -> socket.socket:
    sock = lab.socket(party)
    host, port = lab.dial_address(party).split(":")
    sock.settimeout(30)
    sock.connect((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _round_trip(sock: socket.socket) -> float:
    t0 = time.perf_counter()
    sock.sendall(b"?")
    assert sock.recv(1) == b"!"
    return time.perf_counter() - t0


def test_rtt_is_added_and_bytes_arrive_in_order():
    with NetLab(rate="1gbit", rtt_ms=40) as lab:
        server = _Server(lab)
        client = _client(lab)
        rtts = [_round_trip(client) for _ in range(5)]
        # 4 MiB of a pattern that shows any reordering or loss, then a round trip to know it is all there
        payload = hashlib.sha256(b"netlab").digest() * (4 << 15)
        for i in range(0, len(payload), 50_000):
            client.sendall(payload[i:i + 50_000])
        _round_trip(client)
        client.close()
        server.thread.join(10)
        server.close()
    assert 0.040 <= min(rtts) < 0.040 + 0.030, rtts      # 2 x 20 ms in the relay, plus scheduling
    assert bytes(server.received) == b"?" * 5 + payload + b"?"


def test_tbf_limits_the_bandwidth():
    rate_bits = 40_000_000
    size = 4_000_000
    with NetLab(rate="40mbit", relay=False) as lab:
        server = _Server(lab)
        client = _client(lab)
        t0 = time.perf_counter()
        client.sendall(b"x" * size + b"?")
        assert client.recv(1) == b"!"
        elapsed = time.perf_counter() - t0
        client.close()
        server.close()
    # 4 MB at 40 Mbit/s is 0.8 s of payload; tbf's burst lets at most 10 ms worth through early
    assert elapsed >= 0.9 * size * 8 / rate_bits, elapsed
    assert len(server.received) == size + 1


def test_cut_resets_the_connection_and_the_next_one_works():
    with NetLab(rate="1gbit", rtt_ms=2) as lab:
        server = _Server(lab)
        client = _client(lab)
        _round_trip(client)
        assert lab.cut() == 1
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            for _ in range(100):          # the reset arrives while we keep sending
                client.sendall(b"x" * 10_000)
                time.sleep(0.01)
        client.close()
        server.thread.join(5)
        assert server.errors and isinstance(server.errors[0], ConnectionResetError)
        server.close()
        again = _Server(lab)
        client = _client(lab)
        _round_trip(client)                # a new connection goes through
        client.close()
        again.close()
        assert lab.cuts == 1


def test_cut_every_bytes_drops_the_link_mid_transfer():
    with NetLab(rate="1gbit", cut_every_bytes=300_000) as lab:
        server = _Server(lab)
        client = _client(lab)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            for _ in range(200):
                client.sendall(b"x" * 10_000)
                time.sleep(0.002)
        client.close()
        server.thread.join(5)
        server.close()
        assert lab.cuts == 1
        # the receiver got at most the bytes before the cut point, never a byte after it
        assert 0 < len(server.received) <= 300_000


def test_cut_every_seconds_resets_an_idle_connection():
    with NetLab(rate="1gbit", cut_every_s=0.3) as lab:
        server = _Server(lab)
        client = _client(lab)
        _round_trip(client)
        client.settimeout(5)
        t0 = time.perf_counter()
        with pytest.raises(ConnectionResetError):
            client.recv(1)                      # nothing is sent: only the cut ends the wait
        assert time.perf_counter() - t0 < 3
        client.close()
        server.close()
        assert lab.cuts >= 1


def test_everything_is_deleted_on_exit_even_after_an_error():
    lab = NetLab(rate="100mbit", rtt_ms=5)
    with pytest.raises(RuntimeError, match="boom"):
        with lab:
            names = {lab.namespace("leader"), lab.namespace("follower")}
            assert names <= _namespaces()
            sleeper = lab.popen("leader", [sys.executable, "-c", "import time; time.sleep(60)"])
            raise RuntimeError("boom")
    assert not names & _namespaces()
    assert sleeper.poll() == -signal.SIGKILL
    assert not [t for t in threading.enumerate() if t.name == "netlab-relay"]


def test_two_labs_side_by_side_do_not_clash():
    with NetLab(rtt_ms=1) as one, NetLab(rtt_ms=1) as two:
        assert one.namespace("leader") != two.namespace("leader")
        assert one.dial_address("leader") == two.dial_address("leader")   # same addresses, separate worlds
        servers = [_Server(one), _Server(two)]
        for lab in (one, two):
            client = _client(lab)
            _round_trip(client)
            client.close()
        for server in servers:
            server.close()


def test_stale_namespaces_of_dead_labs_are_removed():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    stale = f"msfnet-{proc.pid}-abcdef-0"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        assert stale in remove_stale_namespaces()
        assert stale not in _namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True, check=False)


def test_bad_settings_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="rate 'fast'"):
        NetLab(rate="fast")
    with pytest.raises(ValueError, match="rtt_ms"):
        NetLab(rtt_ms=-1)
    with pytest.raises(ValueError, match="need relay=True"):
        NetLab(rtt_ms=5, relay=False)
    with pytest.raises(ValueError, match="unknown party 'carol'"):
        NetLab().ip("carol")
    assert parse_rate("1gbit") == 10 ** 9 and parse_rate("2.5mbit") == 2_500_000


def _documented_command() -> list:
    """The command line of docs/netlab.md, as written (with this interpreter for .venv/bin/python)."""
    with open(os.path.join(REPO, "docs", "netlab.md"), encoding="utf-8") as f:
        line = next(l for l in f if l.startswith(".venv/bin/python -m mindspore_federated.tools.netlab"))
    return [sys.executable] + shlex.split(line)[1:]


def test_documented_command_line_holds_the_lab_until_interrupted():
    proc = subprocess.Popen(_documented_command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(lines)
        assert "ip netns exec msfnet-" in text and "--remote_server_address 198.18.0.2:20086" in text, text
        ns = text.split("ip netns exec ")[1].split()[0]
        assert ns in _namespaces()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert ns not in _namespaces()
    finally:
        if proc.poll() is None:
            proc.kill()
