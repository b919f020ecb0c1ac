"""A real network between two parties on one Linux machine: namespaces, a shaped link, delay, cuts.

    leader netns                                        follower netns
    party listens on 127.0.0.1:10087                    party listens on 127.0.0.1:10086
    relay on 198.18.0.1:20087 -> 127.0.0.1:10087        relay on 198.18.0.2:20086 -> 127.0.0.1:10086
               198.18.0.1 ====== veth pair, tc tbf on both ends ====== 198.18.0.2

Each party dials the *relay* in the other namespace (``lab.dial_address(party)``), so every byte
crosses the veth pair (bandwidth limited by ``tc qdisc tbf`` on both ends) and one relay. The relay
is a TCP proxy that holds each direction's bytes for RTT/2 (order and throughput preserved), and
can reset every connection it carries on command (``cut()``), after every N bytes or every T
seconds -- in the middle of whatever message is in flight. It is byte-transparent, so mutual TLS
runs end to end through it: the server certificates must carry the party's namespace address
(``lab.ip(party)``), which is what the peer dials.

Why a relay and not ``netem``: not every kernel has ``sch_netem``; ``tbf`` is everywhere. A
limit of the relay: it terminates TCP, so the kernel's congestion window never sees the added
delay; HTTP/2 flow control and the application's round trips (message, acknowledgement) do.

The addresses come from 198.18.0.0/15 (RFC 2544, reserved for benchmarking) and exist only inside
the two namespaces: nothing is routed outside them, and concurrent labs cannot clash (each has its
own namespaces, named after the owning process). Needs root, ``ip`` (iproute2) and ``tc``.

    with NetLab(rtt_ms=20, rate="1gbit") as lab:
        follower = lab.popen("follower", [python, "run_pangu_train_follower.py",
                             "--http_server_address", lab.listen_address("follower"),
                             "--remote_server_address", lab.dial_address("follower"), ...])
        ...
        lab.cut()                 # reset every connection now

``python -m mindspore_federated.tools.netlab --rtt_ms 20 --rate 1gbit`` sets a lab up, prints how
to start two parties in it (``ip netns exec``) and holds it until Ctrl-C.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import ipaddress
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Deque, Dict, List, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

__all__ = ["NetLab", "netlab_unavailable", "parse_rate", "remove_stale_namespaces"]

_NS_PREFIX = "msfnet-"
_CLONE_NEWNET = 0x40000000
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit)\s*$", re.IGNORECASE)
_RATE_UNITS = {"bit": 1, "kbit": 10 ** 3, "mbit": 10 ** 6, "gbit": 10 ** 9}
_CHUNK = 64 << 10


def parse_rate(rate: Optional[str]) -> Optional[int]:
    """'1gbit' -> 1_000_000_000 (bits per second); None -> None (no limit)."""
    if rate is None:
        return None
    match = _RATE.match(str(rate))
    if not match:
        raise ValueError(f"rate {rate!r}: expected a number and one of bit, kbit, mbit, gbit (e.g. '1gbit')")
    bits = int(float(match.group(1)) * _RATE_UNITS[match.group(2).lower()])
    if bits < 8000:
        raise ValueError(f"rate {rate!r}: below 8kbit, the link would be unusable")
    return bits


def _run(cmd: Sequence[str], what: str) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({' '.join(cmd)}): {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def netlab_unavailable() -> str:
    """'' when network namespaces with tc tbf can be made here, otherwise why not."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"'{tool}' not found (install iproute2: apt-get install iproute2)"
    try:
        with NetLab(rate="10mbit", relay=False):
            pass
    except (RuntimeError, OSError) as err:
        return f"cannot create network namespaces here: {err}"
    return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces() -> List[str]:
    """Delete the namespaces of labs whose process died without cleaning up (kill -9)."""
    removed = []
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.strip() else ""
        match = re.match(rf"^{_NS_PREFIX}(\d+)-", name)
        if match and not _pid_alive(int(match.group(1))):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
            removed.append(name)
    if removed:
        logger.info("removed stale namespaces of dead labs: %s", ", ".join(removed))
    return removed


# ------------------------------------------------------------------------------------------------
# sockets inside a namespace
# ------------------------------------------------------------------------------------------------
def _socket_in(namespace: str) -> socket.socket:
    """A TCP socket that lives in ``namespace`` (made by a short-lived thread that setns()-es).

    A socket keeps the namespace it was created in, whichever thread later uses it; the namespace
    switch dies with the helper thread, the rest of the process stays where it was.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    result: Dict[str, object] = {}

    def work() -> None:
        try:
            fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {namespace}: {os.strerror(err)}")
                result["sock"] = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            finally:
                os.close(fd)
        except BaseException as err:  # pylint: disable=broad-except
            result["error"] = err

    worker = threading.Thread(target=work, name=f"netlab-setns-{namespace}")
    worker.start()
    worker.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["sock"]  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------
# the relay
# ------------------------------------------------------------------------------------------------
class _Connection:
    """One relayed TCP connection: two sockets and the tasks that pump between them."""

    def __init__(self) -> None:
        self.writers: List[asyncio.StreamWriter] = []
        self.tasks: List[asyncio.Task] = []
        self.closed = False

    def reset(self) -> None:
        """Drop the connection now: RST to both ends, queued bytes lost (a cut link)."""
        if self.closed:
            return
        self.closed = True
        for writer in self.writers:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
                except OSError:
                    pass
            writer.transport.abort()
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()


class _Relay:
    """TCP relays (one per party) on one asyncio loop in a background thread."""

    def __init__(self, delay_s: float, buffer_bytes: int, cut_every_bytes: Optional[int],
                 cut_every_s: Optional[float]) -> None:
        self.delay = delay_s
        self.buffer_bytes = buffer_bytes
        self.cut_every_bytes = cut_every_bytes
        self.cut_every_s = cut_every_s
        self.connections: List[_Connection] = []
        self.bytes_relayed = 0
        self.connections_made = 0
        self.cuts = 0
        self._since_cut = 0
        self._down_until = 0.0
        self._servers: List[asyncio.AbstractServer] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="netlab-relay", daemon=True)
        self._thread.start()
        self._ticker: Optional[asyncio.Task] = None
        if cut_every_s:
            async def start_ticker():
                return asyncio.ensure_future(self._tick())
            self._ticker = self._call(start_ticker())

    def _call(self, coro):
        """Run ``coro`` on the relay's loop and return its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.cut_every_s)
            self._cut_all()

    def add(self, listen_sock: socket.socket, target_ns: str, target: Tuple[str, int]) -> None:
        """Relay connections accepted on ``listen_sock`` to ``target`` inside ``target_ns``."""
        async def start():
            server = await asyncio.start_server(
                lambda r, w: self._accepted(r, w, target_ns, target), sock=listen_sock)
            self._servers.append(server)
        self._call(start())

    async def _accepted(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                        target_ns: str, target: Tuple[str, int]) -> None:
        conn = _Connection()
        conn.writers.append(client_w)
        self.connections_made += 1
        if time.monotonic() < self._down_until:
            conn.reset()  # the link is down: connection attempts fail
            return
        sock = await self._loop.run_in_executor(None, _socket_in, target_ns)
        try:
            sock.setblocking(False)
            await self._loop.sock_connect(sock, target)
            server_r, server_w = await asyncio.open_connection(sock=sock)
        except OSError:
            sock.close()
            conn.reset()  # nothing listens there (yet): the client sees a reset, as on a real link
            return
        conn.writers.append(server_w)
        self.connections.append(conn)
        pumps = [asyncio.ensure_future(self._pump(client_r, server_w, conn)),
                 asyncio.ensure_future(self._pump(server_r, client_w, conn))]
        conn.tasks.extend(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)
        if not conn.closed:
            conn.closed = True
            for writer in conn.writers:
                writer.close()
        if conn in self.connections:
            self.connections.remove(conn)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Connection) -> None:
        """Copy src -> dst, each chunk delivered ``delay`` after it arrived; EOF is passed on."""
        queue: Deque[Tuple[float, bytes]] = deque()
        ready = asyncio.Event()
        room = asyncio.Event()
        room.set()
        state = {"queued": 0, "eof": False}

        async def deliver() -> None:
            try:
                while True:
                    while not queue:
                        if state["eof"]:
                            if dst.can_write_eof():
                                dst.write_eof()
                            return
                        ready.clear()
                        await ready.wait()
                    due, data = queue[0]
                    wait = due - self._loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    queue.popleft()
                    dst.write(data)
                    await dst.drain()
                    state["queued"] -= len(data)
                    if state["queued"] <= self.buffer_bytes:
                        room.set()
            except (ConnectionError, OSError):
                conn.reset()

        sender = asyncio.ensure_future(deliver())
        conn.tasks.append(sender)
        try:
            while not conn.closed:
                data = await src.read(_CHUNK)
                if not data:
                    state["eof"] = True
                    ready.set()
                    break
                data, cut = self._count(data)
                if data:
                    queue.append((self._loop.time() + self.delay, data))
                    state["queued"] += len(data)
                    ready.set()
                if cut:
                    await self._flush_then_cut(queue)
                    return
                if state["queued"] > self.buffer_bytes:
                    room.clear()
                    await room.wait()
            await sender
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            conn.reset()

    def _count(self, data: bytes) -> Tuple[bytes, bool]:
        """Account for ``data``; with cut_every_bytes, return only the part before the cut point."""
        if not self.cut_every_bytes:
            self.bytes_relayed += len(data)
            return data, False
        left = self.cut_every_bytes - self._since_cut
        if len(data) < left:
            self._since_cut += len(data)
            self.bytes_relayed += len(data)
            return data, False
        self.bytes_relayed += left
        return data[:left], True

    async def _flush_then_cut(self, queue: Deque) -> None:
        # the bytes before the cut point still arrive (after their delay), then the link drops
        if queue:
            due = queue[-1][0]
            await asyncio.sleep(max(0.0, due - self._loop.time()) + 0.001)
        self._cut_all()

    def _cut_all(self, down_for: float = 0.0) -> int:
        self._since_cut = 0
        self.cuts += 1
        self._down_until = time.monotonic() + down_for
        victims = list(self.connections)
        for conn in victims:
            conn.reset()
        self.connections = [c for c in self.connections if not c.closed]
        logger.info("netlab: link cut (%d connection(s) reset%s)", len(victims),
                    f", down for {down_for:g} s" if down_for else "")
        return len(victims)

    def cut(self, down_for: float = 0.0) -> int:
        async def run():
            return self._cut_all(down_for)
        return self._call(run())

    def close(self) -> None:
        async def stop():
            if self._ticker is not None:
                self._ticker.cancel()
            for server in self._servers:
                server.close()
            for conn in list(self.connections):
                conn.reset()
            for server in self._servers:
                await server.wait_closed()
        try:
            self._call(stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()


# ------------------------------------------------------------------------------------------------
# the lab
# ------------------------------------------------------------------------------------------------
class NetLab:
    """Two parties in two network namespaces joined by a shaped veth pair and delaying relays.

    ``rate``: bandwidth of each direction (``tc tbf``), e.g. ``"1gbit"``; None for no limit.
    ``rtt_ms``: round-trip time added by the relays (each direction holds bytes RTT/2).
    ``cut_every_bytes`` / ``cut_every_s``: reset every relayed connection after that many relayed
    bytes (both directions, both relays counted together) / seconds. ``relay=False``: no relays,
    the parties dial each other's namespace address directly (only the tbf link).
    ``parties``: the two party names; ``ports``: (party listen port, relay port), same in both
    namespaces (each namespace has its own port space).
    """

    def __init__(self, *, rate: Optional[str] = "1gbit", rtt_ms: float = 0.0, relay: bool = True,
                 cut_every_bytes: Optional[int] = None, cut_every_s: Optional[float] = None,
                 parties: Tuple[str, str] = ("leader", "follower"), subnet: str = "198.18.0.0/30",
                 ports: Tuple[int, int] = (10086, 20086)) -> None:
        self.rate_bits = parse_rate(rate)
        if not isinstance(rtt_ms, (int, float)) or isinstance(rtt_ms, bool) or not 0 <= rtt_ms <= 10_000:
            raise ValueError(f"rtt_ms must be a number of milliseconds in 0..10000, got {rtt_ms!r}")
        if (rtt_ms or cut_every_bytes or cut_every_s) and not relay:
            raise ValueError("rtt_ms, cut_every_bytes and cut_every_s need relay=True")
        if cut_every_bytes is not None and (not isinstance(cut_every_bytes, int) or cut_every_bytes < 1):
            raise ValueError(f"cut_every_bytes must be a positive integer, got {cut_every_bytes!r}")
        if cut_every_s is not None and not cut_every_s > 0:
            raise ValueError(f"cut_every_s must be a positive number of seconds, got {cut_every_s!r}")
        if len(parties) != 2 or parties[0] == parties[1]:
            raise ValueError(f"parties must be two different names, got {parties!r}")
        net = ipaddress.ip_network(subnet)
        if net.version != 4 or net.num_addresses < 4:
            raise ValueError(f"subnet {subnet!r}: an IPv4 network with room for two hosts (at most /30)")
        hosts = list(net.hosts())[:2]
        self.rtt_ms = float(rtt_ms)
        self.use_relay = relay
        self.parties = tuple(parties)
        self._ips = {parties[0]: str(hosts[0]), parties[1]: str(hosts[1])}
        self._prefix = net.prefixlen
        self._party_port, self._relay_port = ports
        self._cut_every = (cut_every_bytes, cut_every_s)
        token = secrets.token_hex(3)
        self._namespaces = {p: f"{_NS_PREFIX}{os.getpid()}-{token}-{i}" for i, p in enumerate(parties)}
        self._veths = {p: f"msf{token}{'ab'[i]}" for i, p in enumerate(parties)}
        self._relay: Optional[_Relay] = None
        self._procs: List[subprocess.Popen] = []
        self._created: List[str] = []

    # --- addresses -----------------------------------------------------------------------------
    def namespace(self, party: str) -> str:
        return self._namespaces[self._check(party)]

    def ip(self, party: str) -> str:
        """The party's address on the link (put it in its server certificate)."""
        return self._ips[self._check(party)]

    def listen_address(self, party: str) -> str:
        """Where ``party``'s server listens, inside its namespace (its --http_server_address)."""
        host = "127.0.0.1" if self.use_relay else self.ip(party)
        return f"{host}:{self._party_port}"

    def dial_address(self, party: str) -> str:
        """Where ``party`` reaches its peer (its --remote_server_address): the peer's relay."""
        peer = self.peer(party)
        return f"{self.ip(peer)}:{self._relay_port if self.use_relay else self._party_port}"

    def peer(self, party: str) -> str:
        return self.parties[1 - self.parties.index(self._check(party))]

    def _check(self, party: str) -> str:
        if party not in self._namespaces:
            raise ValueError(f"unknown party {party!r}: this lab has {', '.join(self.parties)}")
        return party

    @property
    def cuts(self) -> int:
        return self._relay.cuts if self._relay else 0

    @property
    def bytes_relayed(self) -> int:
        return self._relay.bytes_relayed if self._relay else 0

    @property
    def connections_made(self) -> int:
        return self._relay.connections_made if self._relay else 0

    def describe(self) -> str:
        rate = f"{self.rate_bits / 1e6:g} Mbit/s" if self.rate_bits else "unlimited"
        cut_bytes, cut_s = self._cut_every
        cuts = ", ".join(x for x in (f"cut every {cut_bytes} bytes" if cut_bytes else "",
                                     f"cut every {cut_s:g} s" if cut_s else "") if x)
        relay = f"relays adding {self.rtt_ms:g} ms RTT" if self.use_relay else "no relay"
        return (f"netlab: {self.parties[0]} {self.ip(self.parties[0])} <-> {self.parties[1]} "
                f"{self.ip(self.parties[1])}, {rate} each way (tc tbf), {relay}{', ' + cuts if cuts else ''}")

    # --- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> "NetLab":
        try:
            self._up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _up(self) -> None:
        remove_stale_namespaces()
        (pa, pb) = self.parties
        for party in self.parties:
            _run(["ip", "netns", "add", self._namespaces[party]], "creating a network namespace")
            self._created.append(self._namespaces[party])
        _run(["ip", "link", "add", self._veths[pa], "netns", self._namespaces[pa], "type", "veth", "peer", "name",
              self._veths[pb], "netns", self._namespaces[pb]], "creating the veth pair")
        for party in self.parties:
            ns, dev = self._namespaces[party], self._veths[party]
            _run(["ip", "-n", ns, "addr", "add", f"{self._ips[party]}/{self._prefix}", "dev", dev], "addressing")
            _run(["ip", "-n", ns, "link", "set", dev, "up"], "link up")
            _run(["ip", "-n", ns, "link", "set", "lo", "up"], "loopback up")
            if self.rate_bits:
                rate_bytes = self.rate_bits // 8
                # burst: >= rate/HZ for tbf to reach the rate; 10 ms worth, at least 32 KiB.
                # latency: how long a packet may queue before it is dropped (TCP then backs off).
                burst = max(32 << 10, rate_bytes // 100)
                _run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", str(self.rate_bits),
                      "burst", str(burst), "latency", "20ms"], "adding the tbf bandwidth limit")
        if self.use_relay:
            rate_bytes = (self.rate_bits or 8 * 10 ** 9) // 8
            buffer_bytes = max(4 << 20, int(rate_bytes * self.rtt_ms / 1000))
            cut_bytes, cut_s = self._cut_every
            self._relay = _Relay(self.rtt_ms / 2000.0, buffer_bytes, cut_bytes, cut_s)
            for party in self.parties:
                ns = self._namespaces[party]
                sock = _socket_in(ns)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self._ips[party], self._relay_port))
                sock.listen(64)
                sock.setblocking(False)
                self._relay.add(sock, ns, ("127.0.0.1", self._party_port))
        logger.info(self.describe())

    def popen(self, party: str, cmd: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start ``cmd`` inside ``party``'s namespace (``ip netns exec`` execs it: the Popen's pid
        is the program's, so ``kill -9`` reaches it). It gets its own process group, which
        close() kills if it is still running."""
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(["ip", "netns", "exec", self.namespace(party), *cmd], **kwargs)
        self._procs.append(proc)
        return proc

    def socket(self, party: str) -> socket.socket:
        """A TCP/IPv4 socket inside ``party``'s namespace, for probes from this process."""
        return _socket_in(self.namespace(party))

    def cut(self, down_for: float = 0.0) -> int:
        """Reset every connection through the relays now; for ``down_for`` seconds new connections
        are reset as well. Returns how many connections were cut."""
        if self._relay is None:
            raise RuntimeError("cut() needs the relays (NetLab(relay=True) and entered)")
        return self._relay.cut(down_for)

    def close(self) -> None:
        """Stop what the lab started and delete its namespaces (idempotent)."""
        for proc in self._procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    proc.kill()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                logger.warning("netlab: process %d did not stop after SIGKILL", proc.pid)
        self._procs.clear()
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        for ns in reversed(self._created):  # deleting a namespace also deletes its veth end
            proc = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                logger.warning("netlab: could not delete namespace %s: %s", ns, proc.stderr.strip())
        self._created.clear()


# ------------------------------------------------------------------------------------------------
# command line: hold a lab open for your own parties
# ------------------------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mindspore_federated.tools.netlab",
        description="Set up two network namespaces joined by a shaped link (tc tbf) with added round-trip "
                    "time and optional link cuts, print how to run two parties in them, hold until Ctrl-C, "
                    "then delete everything. Needs root and iproute2.")
    parser.add_argument("--rate", default="1gbit", help="bandwidth each way, e.g. 100mbit, 1gbit (default 1gbit)")
    parser.add_argument("--rtt_ms", type=float, default=0.0, help="added round-trip time in ms (default 0)")
    parser.add_argument("--cut_every_bytes", type=int, default=None, help="reset all connections every N relayed bytes")
    parser.add_argument("--cut_every_s", type=float, default=None, help="reset all connections every T seconds")
    parser.add_argument("--parties", default="leader,follower", help="the two party names (default leader,follower)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parties = tuple(p.strip() for p in args.parties.split(","))
    if len(parties) != 2:
        parser.error("--parties: two comma-separated names")
    problem = "" if os.geteuid() == 0 else "network namespaces need root"
    if problem:
        parser.error(problem)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with NetLab(rate=args.rate, rtt_ms=args.rtt_ms, cut_every_bytes=args.cut_every_bytes,
                cut_every_s=args.cut_every_s, parties=parties) as lab:
        print(lab.describe())
        for party in parties:
            print(f"{party}: ip netns exec {lab.namespace(party)} <program> --http_server_address "
                  f"{lab.listen_address(party)} --remote_server_address {lab.dial_address(party)}  "
                  f"(server certificate IP: {lab.ip(party)})")
        print("Ctrl-C deletes the lab.", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
