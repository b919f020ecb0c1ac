"""Fixtures of the communicator tests: a PKI made on the fly, free ports, party processes.

Party processes are started with multiprocessing "spawn" and run :func:`party_main` from this
module. It imports mindspore_federated before anything imports grpc, as a real party would.
Only the standard library is imported at module level so that a child starts cheaply.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import multiprocessing as mp
import queue as queue_mod
import socket
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import pytest

PASSWORD = "test-pw"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _make_pki(root: Path) -> SimpleNamespace:
    from mindspore_federated.tools import gen_certs as g

    now = dt.datetime.now(dt.timezone.utc)
    ca = g.generate_ca()
    g.write_ca(root, ca, PASSWORD)
    for name in ("leader", "follower", "mallory"):
        g.generate_party_certs(root, name, ca, PASSWORD, ips=["127.0.0.1"])

    def leaf(stem, cn, *, server, issuer=ca, **kw):
        key, cert = g.issue_certificate(issuer, cn, server=server, ips=["127.0.0.1"] if server else (), **kw)
        g.write_key_and_cert(root, stem, key, cert, PASSWORD, issuer[1])
        return cert

    revoked_client = leaf("follower_revoked_client", "follower", server=False)
    revoked_server = leaf("leader_revoked_server", "leader", server=True)
    leaf("follower_expired_client", "follower", server=False,
         not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
    leaf("leader_soon_server", "leader", server=True, days=10)
    key, cert = g.issue_certificate(ca, "leader", server=True, ips=["10.9.8.7"])  # not our address
    g.write_key_and_cert(root, "leader_wrongip_server", key, cert, PASSWORD, ca[1])
    rogue = g.generate_ca("rogue CA")
    g.write_ca(root / "rogue", rogue, PASSWORD)
    g.generate_party_certs(root / "rogue", "follower", rogue, PASSWORD, ips=["127.0.0.1"])
    g.generate_party_certs(root / "rogue", "leader", rogue, PASSWORD, ips=["127.0.0.1"])
    g.write_crl(root / "crl.pem", g.generate_crl(ca, [revoked_client, revoked_server]))
    g.write_crl(root / "crl_empty.pem", g.generate_crl(ca))
    g.write_crl(root / "rogue_crl.pem", g.generate_crl(rogue))
    return SimpleNamespace(dir=str(root), password=PASSWORD)


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> SimpleNamespace:
    """Certificates for leader/follower/mallory plus revoked, expired and foreign-CA variants."""
    return _make_pki(tmp_path_factory.mktemp("pki"))


def ssl_kwargs(pki, name: str, *, server: str = None, client: str = None, ca: str = "ca.pem",
               crl: str = "crl.pem", **extra) -> dict:
    """SSLConfig keyword arguments for party ``name``; ``server``/``client`` pick other cert files."""
    d = Path(pki.dir)
    kwargs = dict(server_password=pki.password, client_password=pki.password,
                  server_cert_path=str(d / (server or f"{name}_server.p12")),
                  client_cert_path=str(d / (client or f"{name}_client.pem")),
                  ca_cert_path=str(d / ca), crl_path=str(d / crl) if crl else None)
    kwargs.update(extra)
    return kwargs


# --- messages ------------------------------------------------------------------------------------

def make_message(seed: int, idx: int, big_bytes: int = 0):
    """A deterministic nested dict of several dtypes (or one big float16 payload)."""
    import mindspore as ms
    import numpy as np

    rng = np.random.default_rng(seed * 100_003 + idx)
    if big_bytes:
        block = rng.integers(0, 2 ** 16, size=1 << 19, dtype=np.uint16).view(np.float16)  # 1 MiB
        reps = max(1, big_bytes // block.nbytes)
        return {"id": np.array([seed, idx], np.int64), "big": np.tile(block, reps)}
    return {
        "id": np.array([seed, idx], np.int64),
        "z_first": rng.standard_normal((3, 5)).astype(np.float32),
        "half": rng.standard_normal(7).astype(np.float16),
        "bf16": ms.Tensor(rng.standard_normal(4).astype(np.float32), ms.bfloat16),
        "nested": {
            "b_ints": rng.integers(-128, 127, size=(2, 2), dtype=np.int8),
            "a_long": rng.integers(-2 ** 62, 2 ** 62, size=6, dtype=np.int64),
            "deeper": {"mask": rng.random(9) > 0.5, "u8": rng.integers(0, 255, 16, dtype=np.uint8),
                       "f64": rng.standard_normal((2, 1, 2))},
        },
        "scalar": ms.Tensor(np.float32(idx + 0.5)),
        "empty": np.zeros((0, 4), np.float32),
        "grad": ms.Tensor(rng.standard_normal((4, 8)).astype(np.float32)),
    }


def digest(message) -> str:
    """Bit-exact fingerprint: key paths, order, dtypes, shapes and raw bytes."""
    import numpy as np

    h = hashlib.sha256()

    def walk(d, prefix):
        for key, value in d.items():
            h.update(f"{prefix}/{key}".encode())
            if isinstance(value, dict):
                walk(value, f"{prefix}/{key}")
                continue
            arr = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)
            h.update(f"{arr.dtype.name}{arr.shape}".encode())
            if arr.size:
                h.update(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
    walk(message, "")
    return h.hexdigest()


def message_id(message) -> tuple:
    ident = message["id"]
    ident = ident.asnumpy() if hasattr(ident, "asnumpy") else ident
    return int(ident[0]), int(ident[1])


# --- party processes -----------------------------------------------------------------------------

def party_main(spec: dict, out) -> None:
    """Run one party: launch a communicator, then execute ``spec["plan"]``, reporting to ``out``.

    Plan steps:
      ("send", peer, seed, idx, big_bytes)   -> reports ("sent", idx, seconds) or ("send_error", idx, type, text)
      ("recv", peer, count, timeout)        -> reports ("recv", seed, idx, ok) per message, or ("recv_timeout", text),
                                               or ("recv_gone", text, time.monotonic()) on ConnectionError
      ("exchange", peer, seed, peer_seed, n) -> sends n messages in a thread while receiving n
      ("rss",)                              -> reports ("rss", peak RSS growth in bytes since launch)
      ("hold", seconds)                     -> just waits (keeps the server up)
      ("as", name, port, ssl, opts, peer, idx) -> a second, short-lived communicator named ``name``
                                               sends message (seed 99, idx) to ``peer``; reports
                                               ("as_result", name, idx, "ok"|error type, text, seconds)
    """
    import logging
    import resource
    import threading

    logging.basicConfig(level=logging.INFO, format="%(process)d %(name)s %(levelname)s %(message)s")
    try:
        from mindspore_federated import SSLConfig, ServerConfig, VerticalFederatedCommunicator

        me = ServerConfig(spec["name"], f"127.0.0.1:{spec['port']}")
        peers = [ServerConfig(n, f"127.0.0.1:{p}") for n, p in spec["peers"].items()]
        ssl_config = SSLConfig(**spec["ssl"]) if spec.get("ssl") else None
        comm = VerticalFederatedCommunicator(me, peers, ssl_config is not None, ssl_config, **spec.get("opts", {}))
        comm.launch()
        out.put(("ready", spec["name"]))
        nonlocal_base = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024]

        def send(peer, seed, idx, big):
            msg = make_message(seed, idx, big)
            out.put(("sending", idx))
            start = time.monotonic()
            try:
                comm.send_tensors(peer, msg)
                out.put(("sent", idx, time.monotonic() - start))
            except Exception as err:  # reported to the test
                out.put(("send_error", idx, type(err).__name__, str(err)))

        def recv(peer, count, timeout):
            for _ in range(count):
                try:
                    msg = comm.receive(peer, timeout=timeout)
                except TimeoutError as err:
                    out.put(("recv_timeout", str(err)))
                    return
                except ConnectionError as err:  # the peer is gone (said goodbye, or died)
                    out.put(("recv_gone", str(err), time.monotonic()))
                    return
                seed, idx = message_id(msg)
                big = msg["big"].asnumpy().nbytes if "big" in msg else 0
                if big:  # before verification builds the expected message
                    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                    out.put(("rss_at_receive", peak - nonlocal_base[0]))
                ok = digest(msg) == digest(make_message(seed, idx, big))
                out.put(("recv", seed, idx, ok))

        for step in spec["plan"]:
            kind = step[0]
            if kind == "send":
                send(*step[1:])
            elif kind == "recv":
                recv(*step[1:])
            elif kind == "exchange":
                _, peer, seed, peer_seed, n = step
                sender = threading.Thread(target=lambda: [send(peer, seed, i, 0) for i in range(n)])
                sender.start()
                recv(peer, n, 60)
                sender.join(120)
            elif kind == "rss":
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                out.put(("rss", peak - nonlocal_base[0]))
            elif kind == "rss_base":
                nonlocal_base[0] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            elif kind == "hold":
                time.sleep(step[1])
            elif kind == "as":
                _, name, port, ssl_kw, opts, peer, idx = step
                other = VerticalFederatedCommunicator(
                    ServerConfig(name, f"127.0.0.1:{port}"), peers, ssl_kw is not None,
                    SSLConfig(**ssl_kw) if ssl_kw else None, **opts)
                start = time.monotonic()
                try:
                    with other:
                        other.send_tensors(peer, make_message(99, idx))
                    out.put(("as_result", name, idx, "ok", "", time.monotonic() - start))
                except Exception as err:  # reported to the test
                    out.put(("as_result", name, idx, type(err).__name__, str(err), time.monotonic() - start))
        comm.close()
        out.put(("done", threading.active_count()))
    except Exception:  # pragma: no cover - shows up in the test's assertion
        out.put(("crash", traceback.format_exc()))


class Party:
    """A party process and its report queue."""

    def __init__(self, spec: dict):
        ctx = mp.get_context("spawn")
        self.spec = spec
        self.seen, self.pending = [], []
        self.out = ctx.Queue()
        self.proc = ctx.Process(target=party_main, args=(spec, self.out), daemon=True)
        self.proc.start()

    def expect(self, kind: str, timeout: float = 60.0) -> tuple:
        """The next report of ``kind``; reports of other kinds stay pending for later calls."""
        for i, item in enumerate(self.pending):
            if item[0] == kind:
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.spec['name']}: no {kind!r} report within {timeout} s; "
                                     f"seen {self.seen}")
            try:
                item = self.out.get(timeout=min(left, 1.0))
            except queue_mod.Empty:
                if not self.proc.is_alive():
                    raise AssertionError(f"{self.spec['name']} exited ({self.proc.exitcode}) before {kind!r}; "
                                         f"seen {self.seen}") from None
                continue
            self.seen.append(item)
            if item[0] == "crash":
                raise AssertionError(f"{self.spec['name']} crashed:\n{item[1]}")
            if item[0] == kind:
                return item
            self.pending.append(item)

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(10)


@pytest.fixture
def parties():
    """Start parties with ``parties(spec)``; all are killed at teardown."""
    started = []

    def start(spec: dict) -> Party:
        party = Party(spec)
        started.append(party)
        return party

    yield start
    for party in started:
        party.stop()
