"""Where the protocol's messages travel: an in-process pair, or the communicator to the peer.

Both adapters offer the same four calls -- `send`, `recv(timeout)`, `try_send` (best effort, bounded:
used for ABORT while stopping) and `close` -- so one party's code runs unchanged with both parties in
one process (tests, the one-process example) and across two servers.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple

__all__ = ["LocalChannel", "CommunicatorChannel"]


class LocalChannel:
    """One end of an in-memory duplex channel: both parties in one process.

    Tensors are handed over as they are. `measure=True` records the bytes each message would take on
    the wire; `wire=True` sends every message through the codec (encoded with this end's
    `compress_configs`, decoded for the peer), so the one-process run sees exactly what the
    communicator would deliver, compression error included, and times it (`codec_seconds`).
    """

    def __init__(self, inbox: Deque, outbox: Deque, name: str, measure: bool = False, wire: bool = False,
                 compress_configs: Optional[Mapping[str, Any]] = None) -> None:
        self._inbox, self._outbox, self.name = inbox, outbox, name
        self.wire = wire
        self.measure = measure or wire
        self.compress_configs: Dict[str, Any] = dict(compress_configs or {})
        self.bytes_sent = 0
        self.messages_sent = 0
        self.codec_seconds = 0.0
        self.sent_log: List[Tuple[int, int]] = []  # (kind, bytes) when measuring
        self.where = f"in-process {name}"

    @staticmethod
    def pair(names: Tuple[str, str] = ("leader", "follower"), measure: bool = False,
             wire: bool = False) -> Tuple["LocalChannel", "LocalChannel"]:
        """The two ends: messages sent on one are received on the other, in order."""
        a_to_b: Deque = deque()
        b_to_a: Deque = deque()
        return (LocalChannel(b_to_a, a_to_b, names[0], measure, wire),
                LocalChannel(a_to_b, b_to_a, names[1], measure, wire))

    def set_compress_configs(self, configs: Mapping[str, Any]) -> None:
        self.compress_configs = dict(configs)

    def send(self, msg: Dict) -> None:
        from ..communication import codec  # pylint: disable=import-outside-toplevel
        if self.wire:
            t0 = time.perf_counter()
            data = codec.dumps(msg, self.compress_configs or None)
            delivered = codec.loads(data)
            self.codec_seconds += time.perf_counter() - t0
            size = len(data)
        else:
            delivered = msg
            size = (sum(len(s) for s in codec.dumps_segments(msg, self.compress_configs or None))
                    if self.measure else 0)
        if self.measure:
            self.bytes_sent += size
            kind = msg.get("meta", {}).get("kind", -1)
            self.sent_log.append((int(kind), size))
        self.messages_sent += 1
        self._outbox.append(delivered)

    def recv(self, timeout: Optional[float] = None) -> Dict:  # pylint: disable=unused-argument
        if not self._inbox:
            raise RuntimeError(f"local channel ({self.name}): nothing to receive -- the in-process "
                               f"parties were driven out of order")
        return self._inbox.popleft()

    def try_send(self, msg: Dict, timeout: float = 5.0) -> None:  # pylint: disable=unused-argument
        self.send(msg)

    def close(self) -> None:
        """Nothing to release in memory."""


class CommunicatorChannel:
    """The channel to one peer over a launched VerticalFederatedCommunicator.

    Errors name the peer and its address and say what to check. `bytes_sent` is the communicator's
    count (protobuf payload of every acknowledged message).
    """

    def __init__(self, communicator: Any, peer: str, recv_timeout: float, abort_timeout: float = 5.0) -> None:
        self.comm = communicator
        self.peer = peer
        self.recv_timeout = recv_timeout
        self.abort_timeout = abort_timeout
        self.messages_sent = 0
        configs = getattr(communicator, "remote_server_configs", {}) or {}
        address = getattr(configs.get(peer), "server_address", "?") if isinstance(configs, Mapping) else "?"
        self.where = f"{peer} at {address}"

    @property
    def bytes_sent(self) -> int:
        return int(getattr(self.comm, "bytes_sent", 0))

    def send(self, msg: Dict) -> None:
        try:
            # A step cannot go on with a restarted peer (that takes --resume), so a dead peer is
            # reported within the communicator's liveness timeout instead of after its send deadline.
            self.comm.send_tensors(self.peer, msg, give_up_when_gone=True)
        except ConnectionError as err:
            if type(err) is ConnectionError:   # the peer is gone (it said goodbye, or fell silent)
                raise ConnectionError(f"the {self.where} is gone: {err}") from err
            raise ConnectionError(f"cannot reach the {self.where}: {err} (is it running and listening on that "
                                  f"address, are the addresses and certificates right?)") from err
        except (TimeoutError, OSError) as err:
            raise ConnectionError(f"cannot reach the {self.where}: {err} (is it running and listening on that "
                                  f"address, are the addresses and certificates right?)") from err
        self.messages_sent += 1

    def recv(self, timeout: Optional[float] = None) -> Dict:
        wait = self.recv_timeout if timeout is None else timeout
        try:
            return self.comm.receive(self.peer, timeout=wait)
        except TimeoutError as err:
            raise TimeoutError(f"no message from the {self.where} within {wait:g} s: {err}") from err

    def try_send(self, msg: Dict, timeout: Optional[float] = None) -> None:
        """Best effort (ABORT while stopping): never blocks longer than `timeout` seconds."""
        worker = threading.Thread(target=self._quiet_send, args=(msg,), daemon=True)
        worker.start()
        worker.join(self.abort_timeout if timeout is None else timeout)

    def goodbye(self, reason: str) -> None:
        """Also tell the peer at the transport level (a communicator with liveness: its `goodbye`),
        so that a peer blocked in `receive` stops even if our ABORT message could not get through."""
        say = getattr(self.comm, "goodbye", None)
        if callable(say):
            try:
                say(reason, self.peer)
            except Exception:  # pylint: disable=broad-except  (best effort while stopping)
                pass

    def _quiet_send(self, msg: Dict) -> None:
        try:
            self.comm.send_tensors(self.peer, msg)
        except Exception:  # pylint: disable=broad-except  (the peer may be gone: nothing more to do)
            pass

    def close(self) -> None:
        self.comm.close()
