"""The parties' communicator: send and receive (nested) dicts of tensors over gRPC + mutual TLS.

See docs/communication.md for the delivery guarantees, the TLS rules and their limits.
"""
from __future__ import annotations

import functools
import ipaddress
import logging
import queue
import re
import secrets
import threading
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence, Union

from mindspore_federated.communication import codec
from mindspore_federated.communication._delivery import Abandoned, Inbox, PeerGone, next_epoch
from mindspore_federated.communication._liveness import Heartbeats, PeerHealth
from mindspore_federated.communication.tls import SSLConfig, apply_cipher_list, load_tls_material

logger = logging.getLogger(__name__)

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_NAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


class ServerConfig:
    """A party's name and the ``"ip:port"`` (or ``"host:port"``, ``"[ipv6]:port"``) it listens on."""

    def __init__(self, server_name: str, server_address: str):
        if not isinstance(server_name, str) or not _NAME.match(server_name):
            raise ValueError(f"server_name must be 1-128 characters of [A-Za-z0-9_.:@-], got {server_name!r}")
        self.server_name = server_name
        self.server_address = _validate_address(server_address, server_name)

    def __repr__(self) -> str:
        return f"ServerConfig({self.server_name!r}, {self.server_address!r})"


def _validate_address(address: str, name: str) -> str:
    if not isinstance(address, str) or ":" not in address:
        raise ValueError(f"server_address of '{name}' must be 'ip:port', got {address!r}")
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"server_address of '{name}': port must be 1..65535, got {address!r}")
    bracketed = host.startswith("[") and host.endswith("]")
    bare = host[1:-1] if bracketed else host
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        ip = None
    if ip is not None and (ip.version == 6) != bracketed:
        raise ValueError(f"server_address of '{name}': write IPv6 as '[addr]:port' (and IPv4 without "
                         f"brackets), got {address!r}")
    if ip is None and (bracketed or not _HOSTNAME.match(bare)):
        raise ValueError(f"server_address of '{name}': {host!r} is not an IP address or host name")
    return address


class VerticalFederatedCommunicator:
    """Sends and receives dicts of tensors between this party and its peers.

    ``http_server_config``: this party (its name is the sender name peers see; its address is where
    it listens). ``remote_server_config``: one peer or a list, addressed by ``server_name``.
    ``send_tensors`` returns once the peer has queued the message; ``receive`` returns messages
    from one peer exactly once and in the order they were sent.

    Keyword options: ``chunk_size`` (bytes per streamed chunk, 64 KiB..16 MiB), ``max_message_size``
    (larger incoming messages are refused before buffering), ``connect_timeout`` (s, one TCP+TLS
    connection attempt), ``send_deadline`` (s, bound on one ``send_tensors`` including retries and
    back-pressure waits), ``queue_size`` (received, not yet consumed messages per peer),
    ``liveness_timeout`` (s without any sign of life after which a peer counts as gone: a blocked
    ``receive`` raises ConnectionError). Peers are beaten about once a second.
    """

    def __init__(self, http_server_config: ServerConfig,
                 remote_server_config: Union[ServerConfig, Sequence[ServerConfig]],
                 enable_ssl: bool = False, ssl_config: Optional[SSLConfig] = None,
                 compress_configs: Optional[Mapping] = None, *, chunk_size: int = 1 << 20,
                 max_message_size: int = 8 << 30, connect_timeout: float = 20.0,
                 send_deadline: float = 900.0, queue_size: int = 16, liveness_timeout: float = 6.0):
        if not isinstance(http_server_config, ServerConfig):
            raise TypeError(f"http_server_config must be a ServerConfig, got {type(http_server_config).__name__}")
        remotes = [remote_server_config] if isinstance(remote_server_config, ServerConfig) \
            else list(remote_server_config)
        if not remotes or not all(isinstance(r, ServerConfig) for r in remotes):
            raise TypeError("remote_server_config must be a ServerConfig or a non-empty list of them")
        names = [r.server_name for r in remotes]
        if len(set(names)) != len(names) or http_server_config.server_name in names:
            raise ValueError(f"peer names must be unique and differ from our own "
                             f"('{http_server_config.server_name}'), got {names}")
        _check_range("chunk_size", chunk_size, 64 << 10, 16 << 20)
        _check_range("max_message_size", max_message_size, 1, 1 << 62)
        _check_range("queue_size", queue_size, 1, 1 << 20)
        for what, value in (("connect_timeout", connect_timeout), ("send_deadline", send_deadline),
                            ("liveness_timeout", liveness_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
        self._http_server_config = http_server_config
        self._remote_server_config = remote_server_config
        self.remote_server_configs: Dict[str, ServerConfig] = {r.server_name: r for r in remotes}
        self._compress_configs = dict(compress_configs) if compress_configs else None
        self._options = dict(chunk_size=chunk_size, connect_timeout=float(connect_timeout),
                             send_deadline=float(send_deadline))
        self._max_message_size = max_message_size
        self._material = None
        if enable_ssl:
            if not isinstance(ssl_config, SSLConfig):
                raise ValueError("enable_ssl=True needs ssl_config=SSLConfig(...)")
            apply_cipher_list(ssl_config.cipher_list)  # before grpc is imported (see tls.py)
            self._material = load_tls_material(ssl_config)
        else:
            logger.warning("communicator '%s': SSL is disabled, tensors travel in PLAINTEXT and peers "
                           "are not authenticated; use enable_ssl=True outside a trusted network",
                           http_server_config.server_name)
        self._inboxes = {name: Inbox(name, queue_size) for name in names}
        self._liveness_timeout = float(liveness_timeout)
        self._health = {r.server_name: PeerHealth(r.server_name, r.server_address, self._liveness_timeout)
                        for r in remotes}
        self._heartbeats: Optional[Heartbeats] = None
        self._said_goodbye: set = set()
        self._service = None
        self._send_locks = {name: threading.Lock() for name in names}
        self._seq = {name: 0 for name in names}
        self._bytes_sent = 0
        self._links: Dict[str, object] = {}
        self._server = None
        self._executor = None
        self._epoch = secrets.randbits(63) | 1
        self._state = "new"
        self._state_lock = threading.Lock()

    def http_server_config(self) -> ServerConfig:
        """This party's ServerConfig (a method, as in the original)."""
        return self._http_server_config

    def remote_server_config(self) -> Union[ServerConfig, Sequence[ServerConfig]]:
        """The peer ServerConfig(s), as given to the constructor (a method, as in the original)."""
        return self._remote_server_config

    # --- lifecycle -------------------------------------------------------------------------------
    def launch(self) -> None:
        """Start listening on ``http_server_config.server_address``; raises OSError if it cannot."""
        from mindspore_federated.communication import transport
        with self._state_lock:
            if self._state != "new":
                raise RuntimeError(f"communicator '{self._name}' was already launched")
            limits = codec.DecodeLimits(max_decoded_bytes=self._max_message_size)
            service = transport.MessageService(self._inboxes, functools.partial(codec.loads, limits=limits),
                                               self._epoch, self._max_message_size, self._material,
                                               self._name, on_contact=self._on_contact)
            try:
                self._server, self._executor = transport.start_server(
                    self._http_server_config.server_address, service, self._material)
            except OSError:
                service.close()
                raise
            self._service = service
            for name, config in self.remote_server_configs.items():
                self._links[name] = self._new_link(name, config)
            self._heartbeats = Heartbeats(self._health, lambda: dict(self._links), self._epoch,
                                          interval=min(1.0, self._liveness_timeout / 4))
            self._heartbeats.start()
            self._state = "running"
        logger.info("communicator '%s' listening on %s (%s), peers: %s", self._name,
                    self._http_server_config.server_address, "mutual TLS" if self._material else "plaintext",
                    ", ".join(f"{n}@{c.server_address}" for n, c in self.remote_server_configs.items()))

    def _new_link(self, name: str, config: ServerConfig):
        from mindspore_federated.communication import transport
        health = self._health[name]
        return transport.PeerLink(self._name, name, config.server_address, next_epoch(),
                                  material=self._material, farewell=health.farewell, **self._options)

    def _on_contact(self, peer: str, epoch: Optional[int], goodbye: str) -> None:
        if goodbye:
            self._health[peer].goodbye(epoch, goodbye)
        else:
            self._health[peer].contact(epoch)

    def goodbye(self, reason: str, target_server_name: Optional[str] = None) -> Dict[str, str]:
        """Tell the peer (default: every peer) that this party stops, and why.

        Best effort, at most ~2 s: the peer's blocked ``receive`` (once nothing is queued from us)
        and its sends to us raise ConnectionError quoting ``reason``. Returns {peer: problem}, ""
        for each peer that got the message. ``close()`` says goodbye by itself to peers not told yet.
        """
        if not isinstance(reason, str) or not reason:
            raise ValueError("goodbye needs a non-empty reason")
        peers = list(self.remote_server_configs) if target_server_name is None else [target_server_name]
        for name in peers:
            self._peer(name)
        self._said_goodbye.update(peers)
        outcome = self._heartbeats.beat_all(goodbye=reason[:2000], timeout=2.0, only=peers)
        for name, problem in outcome.items():
            if problem:
                logger.warning("could not tell '%s' why we stop: %s", name, problem)
        return outcome

    def close(self) -> None:
        """Stop the server and the channels; blocked ``receive``/``send_tensors`` calls raise."""
        with self._state_lock:
            if self._state == "closed":
                return
            was_running, self._state = self._state == "running", "closed"
        if was_running:
            # peers we were in touch with learn that we stop instead of waiting out a timeout
            told = [n for n, h in self._health.items()
                    if n not in self._said_goodbye and h.verdict() == "" and h.problem == "" and h.seen]
            if told:
                self._heartbeats.beat_all(goodbye=f"'{self._name}' closed its communicator", timeout=1.0,
                                          only=told)
            self._heartbeats.stop()
        for inbox in self._inboxes.values():
            inbox.closed.set()
        for link in self._links.values():
            link.close()
        if was_running:
            self._server.stop(grace=1.0).wait()
            self._executor.shutdown(wait=True)
            self._service.close()
        logger.info("communicator '%s' closed", self._name)

    def __enter__(self) -> "VerticalFederatedCommunicator":
        if self._state == "new":
            self.launch()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- messages --------------------------------------------------------------------------------
    def send_tensors(self, target_server_name: str, tensor_dict: Mapping, *,
                     give_up_when_gone: bool = False) -> None:
        """Send a (nested) dict of tensors to ``target_server_name``; returns once the peer
        acknowledged it.

        Raises TimeoutError when the peer did not acknowledge within ``send_deadline``,
        ConnectionRefusedError when it refused the message or the TLS connection, ConnectionError
        when it said goodbye. A silent peer is retried until the deadline, so that a restarted
        receiver still gets the message exactly once; with ``give_up_when_gone`` the send raises
        ConnectionError as soon as the peer counts as gone (no sign of life for ``liveness_timeout``
        s), for callers that cannot continue with a restarted peer anyway (a training step). After a
        failure the message may or may not have been delivered; the next message starts a new sequence.
        """
        target_name = target_server_name
        config = self._peer(target_name)
        segments = codec.dumps_segments(tensor_dict, self._compress_configs,
                                        send_addr=self._http_server_config.server_address,
                                        recv_addr=config.server_address)
        with self._send_locks[target_name]:
            link = self._links[target_name]
            seq = self._seq[target_name] + 1
            try:
                link.send(seq, segments, gone=self._health[target_name].verdict if give_up_when_gone else None)
                self._health[target_name].contact(reached=True)
            except Exception:
                # Unknown whether it arrived: a fresh epoch lets the peer accept whatever comes next.
                with self._state_lock:
                    if self._state == "running":
                        link.close()
                        self._links[target_name] = self._new_link(target_name, config)
                        self._seq[target_name] = 0
                raise
            self._seq[target_name] = seq
            self._bytes_sent += sum(len(segment) for segment in segments)

    @property
    def bytes_sent(self) -> int:
        """Serialized bytes of all acknowledged messages (TLS and gRPC framing not included)."""
        return self._bytes_sent

    def receive(self, target_server_name: str, timeout: Optional[float] = None) -> "OrderedDict[str, object]":
        """The next message from ``target_server_name`` (blocks; ``timeout`` in s, None waits forever).

        Raises TimeoutError (with what is wrong with the peer's address, if anything), and
        ConnectionError naming the peer once it is gone (said goodbye, or no sign of life for
        ``liveness_timeout`` s after having been in contact) and nothing from it is queued.
        """
        target_name = target_server_name
        config = self._peer(target_name, need_running=False)
        if self._state == "new":
            raise RuntimeError(f"communicator '{self._name}': call launch() before receive()")
        health = self._health[target_name]
        try:
            return self._inboxes[target_name].get(timeout, gone=health.verdict)
        except queue.Empty:
            hint = f"; {health.problem}" if health.problem else ""
            raise TimeoutError(f"no message from peer '{target_name}' ({config.server_address}) within "
                               f"{timeout:g} s{hint}") from None
        except PeerGone as err:
            raise ConnectionError(f"peer '{target_name}' ({config.server_address}) is gone: {err}") from None
        except Abandoned:
            raise RuntimeError(f"communicator '{self._name}' was closed while receiving from "
                               f"'{target_name}'") from None

    # --- data join (the original's registration calls; the protocol lives in data_join) ----------
    def send_register(self, target_server_name: str, worker_register) -> tuple:
        """Follower: register with the leader; returns its (primary_key, bucket_num, shard_num, join_type)."""
        from mindspore_federated.data_join import _handshake
        return _handshake.send_register(self, target_server_name, worker_register)

    def data_join_wait_for_start(self, worker_config: Optional[dict] = None) -> dict:
        """Leader: block until the follower registers, answer with the leader's data-join settings."""
        from mindspore_federated.data_join import _handshake
        return _handshake.data_join_wait_for_start(self, worker_config)

    # --- helpers ---------------------------------------------------------------------------------
    @property
    def _name(self) -> str:
        return self._http_server_config.server_name

    def _peer(self, target_name: str, need_running: bool = True) -> ServerConfig:
        config = self.remote_server_configs.get(target_name)
        if config is None:
            raise ValueError(f"unknown peer {target_name!r}; configured peers: {sorted(self.remote_server_configs)}")
        if need_running and self._state != "running":
            raise RuntimeError(f"communicator '{self._name}' is {self._state}: call launch() first"
                               if self._state == "new" else f"communicator '{self._name}' is closed")
        return config


def _check_range(what: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an int in [{low}, {high}], got {value!r}")


__all__: List[str] = ["ServerConfig", "VerticalFederatedCommunicator"]
