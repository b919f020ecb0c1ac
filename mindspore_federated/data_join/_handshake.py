"""Start of a data join: the follower registers, the leader answers with the settings that win.

The leader's ``primary_key``, ``bucket_num``, ``shard_num`` and ``join_type`` are the ones both
parties use. Both parties send their hello first and then read the peer's, so two leaders or two
followers notice the misconfiguration instead of waiting for each other.
"""
from __future__ import annotations

import logging
import threading
from typing import Optional

from mindspore_federated.data_join._channel import DataJoinPeerError, decode, encode
from mindspore_federated.data_join.context import _WorkerConfig, _WorkerRegister

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
DEFAULT_START_TIMEOUT = 600.0
_leader_config: Optional[dict] = None  # what data_join_wait_for_start() announces (set by the leader's worker)


class RegisterReply(tuple):
    """``(primary_key, bucket_num, shard_num, join_type)`` as the original returns it, plus ``key_type``:
    the primary key's type in the leader's schema."""

    key_type: Optional[str] = None

    def __new__(cls, primary_key, bucket_num, shard_num, join_type, key_type=None):
        reply = super().__new__(cls, (primary_key, bucket_num, shard_num, join_type))
        reply.key_type = key_type
        return reply


def set_worker_config(worker_config: _WorkerConfig, key_type: Optional[str] = None) -> None:
    """Record the leader's settings for the next ``data_join_wait_for_start``."""
    global _leader_config
    _leader_config = dict(primary_key=worker_config.primary_key, bucket_num=worker_config.bucket_num,
                          shard_num=worker_config.shard_num, join_type=worker_config.join_type, key_type=key_type)


def _unreachable(peer: str, address: str, cause: Exception) -> DataJoinPeerError:
    error = DataJoinPeerError(f"cannot reach peer '{peer}' at {address}: {cause} -- check "
                              f"remote_server_name/remote_server_address and the certificates")
    error.__cause__ = cause
    return error


def _exchange(communicator, peer: str, hello: dict, timeout: float) -> dict:
    """Send our hello (in the background: the peer may not be up yet) and return the peer's."""
    failure = []

    def send():
        try:
            communicator.send_tensors(peer, encode(hello))
        except Exception as err:  # reported below
            failure.append(err)

    sender = threading.Thread(target=send, name="data-join-hello", daemon=True)
    sender.start()
    address = communicator.remote_server_configs[peer].server_address
    waited = 0.0
    while True:
        if failure:
            raise _unreachable(peer, address, failure[0])
        try:
            header, _ = decode(communicator.receive(peer, timeout=min(2.0, timeout - waited)), peer)
            if header.get("kind") in ("hb", "bye"):
                continue  # left over from an earlier join on this communicator
            break
        except TimeoutError:
            waited += 2.0
            if waited >= timeout:
                raise DataJoinPeerError(
                    f"no answer from peer '{peer}' at {address} within {timeout:g} s: start the other party's "
                    f"data join, and check remote_server_name/remote_server_address on both sides") from None
            if waited % 30 < 2.0:
                logger.info("waiting for peer '%s' at %s to start its data join (%.0f s)", peer, address, waited)
    if header.get("kind") == "abort":
        raise DataJoinPeerError(f"peer '{peer}' aborted the data join: {str(header.get('reason'))[:500]}")
    if header.get("kind") != "hello" or header.get("version") != PROTOCOL_VERSION:
        raise DataJoinPeerError(f"peer '{peer}' did not start a data join of protocol version {PROTOCOL_VERSION} "
                                f"(got {header.get('kind')!r}, version {header.get('version')!r})")
    sender.join(timeout)
    if failure:
        raise _unreachable(peer, address, failure[0])
    return header


def _only_peer(communicator) -> str:
    peers = list(communicator.remote_server_configs)
    if len(peers) != 1:
        raise ValueError(f"a data join runs between two parties; this communicator has peers {peers}")
    return peers[0]


def send_register(communicator, target_server_name: str, worker_register: _WorkerRegister,
                  timeout: float = DEFAULT_START_TIMEOUT) -> RegisterReply:
    """Follower side: register with the leader and return the leader's settings."""
    hello = dict(kind="hello", version=PROTOCOL_VERSION, role="follower",
                 worker_name=str(getattr(worker_register, "worker_name", "follower")))
    header = _exchange(communicator, target_server_name, hello, timeout)
    if header.get("role") != "leader":
        raise ValueError(f"both parties are configured with role '{header.get('role')}': peer "
                         f"'{target_server_name}' must run with role 'leader' when this one is the follower")
    config = header.get("config") or {}
    logger.info("leader '%s' set primary_key=%r bucket_num=%s shard_num=%s join_type=%r", target_server_name,
                config.get("primary_key"), config.get("bucket_num"), config.get("shard_num"), config.get("join_type"))
    return RegisterReply(config.get("primary_key"), config.get("bucket_num"), config.get("shard_num"),
                         config.get("join_type"), config.get("key_type"))


def data_join_wait_for_start(communicator, worker_config: Optional[dict] = None,
                             timeout: float = DEFAULT_START_TIMEOUT) -> dict:
    """Leader side: wait for the follower's registration, answer with our settings; returns its hello."""
    config = worker_config if worker_config is not None else _leader_config
    if config is None:
        raise RuntimeError("data_join_wait_for_start: the leader's worker config is not set "
                           "(FLDataWorker sets it before waiting)")
    peer = _only_peer(communicator)
    hello = dict(kind="hello", version=PROTOCOL_VERSION, role="leader", config=config)
    header = _exchange(communicator, peer, hello, timeout)
    if header.get("role") != "follower":
        raise ValueError(f"both parties are configured with role '{header.get('role')}': peer '{peer}' must run "
                         f"with role 'follower' when this one is the leader")
    logger.info("follower '%s' registered (worker %r)", peer, header.get("worker_name"))
    return header
