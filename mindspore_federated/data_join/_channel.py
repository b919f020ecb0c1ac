"""The data join's messages over the communicator: framing, demultiplexing, liveness, abort.

Every message is ``{"h": JSON header bytes, "p": payload bytes}`` (uint8 tensors). One reader
thread takes the peer's messages off the communicator and files them by ``(kind, bucket)``, so
buckets can run in parallel; heartbeats let a waiting party tell a busy peer from a dead one; an
``abort`` carries the peer's failure reason (never data) so both sides report the same cause.
The reader stops at the peer's ``bye``: later messages (training) stay in the communicator.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Dict, Iterable, Optional, Tuple

import numpy as np

logger = logging.getLogger(__name__)

_MAX_HEADER = 64 << 10


class DataJoinPeerError(RuntimeError):
    """The peer disappeared, aborted, or broke the protocol."""


def encode(header: dict, payload: bytes = b"") -> dict:
    return {"h": np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8),
            "p": np.frombuffer(payload, np.uint8) if payload else np.zeros(0, np.uint8)}


def decode(message, peer: str) -> Tuple[dict, bytes]:
    try:
        raw_header, raw_payload = message["h"], message["p"]
        raw_header = raw_header.asnumpy() if hasattr(raw_header, "asnumpy") else np.asarray(raw_header)
        raw_payload = raw_payload.asnumpy() if hasattr(raw_payload, "asnumpy") else np.asarray(raw_payload)
        if raw_header.dtype != np.uint8 or raw_header.size > _MAX_HEADER or raw_payload.dtype != np.uint8:
            raise ValueError("bad header or payload tensor")
        header = json.loads(raw_header.tobytes().decode("utf-8"))
        if not isinstance(header, dict) or not isinstance(header.get("kind"), str):
            raise ValueError("header has no 'kind'")
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as err:
        raise DataJoinPeerError(f"peer '{peer}' sent a message that is not part of the data-join protocol "
                                f"({err}); is it running the data join of this version?") from None
    return header, raw_payload.tobytes()


class PeerChannel:
    """Tagged messages to and from one peer; ``expected`` lists the ``(kind, bucket)`` we accept once each."""

    def __init__(self, communicator, peer: str, expected: Iterable[Tuple[str, Optional[int]]], *,
                 peer_timeout: float, heartbeat: float = 1.0):
        self._comm, self._peer = communicator, peer
        self._address = communicator.remote_server_configs[peer].server_address
        self._boxes: Dict[Tuple[str, Optional[int]], "queue.Queue"] = {key: queue.Queue(1) for key in expected}
        self._peer_timeout, self._heartbeat = float(peer_timeout), float(heartbeat)
        self._error: Optional[BaseException] = None
        self._bye = threading.Event()
        self._stop_reading = threading.Event()
        self._stop_beating = threading.Event()
        self._threads = [threading.Thread(target=self._read, name=f"data-join-reader-{peer}", daemon=True),
                         threading.Thread(target=self._beat, name=f"data-join-heartbeat-{peer}", daemon=True)]

    def start(self) -> "PeerChannel":
        for thread in self._threads:
            thread.start()
        return self

    # --- sending ---------------------------------------------------------------------------------
    def send(self, kind: str, bucket: Optional[int] = None, payload: bytes = b"", **fields) -> None:
        """Send, but return early with the reader's error (the peer aborted or went silent): a send to
        a vanished peer would otherwise retry for the communicator's whole send deadline."""
        self._raise_if_failed()
        outcome: list = []
        done = threading.Event()

        def attempt():
            try:
                self._comm.send_tensors(self._peer, encode(dict(fields, kind=kind, bucket=bucket), payload))
            except Exception as err:  # re-raised below unless the reader knows better
                outcome.append(err)
            done.set()

        threading.Thread(target=attempt, name=f"data-join-send-{kind}", daemon=True).start()
        while not done.wait(0.2):
            self._raise_if_failed()
        if outcome:
            if self._error is None and not self._stop_reading.is_set():
                time.sleep(1.0)  # an abort that explains the failure may still be on its way
            self._raise_if_failed()
            raise outcome[0]

    def _beat(self) -> None:
        while not self._stop_beating.wait(self._heartbeat):
            try:
                self._comm.send_tensors(self._peer, encode({"kind": "hb"}))
            except Exception as err:  # the reader reports the lost peer; keep trying until stopped
                logger.debug("heartbeat to %s failed: %s", self._peer, err)

    def abort(self, reason: str) -> None:
        """Tell the peer we failed (best effort, a few seconds at most) and stop."""
        self.stop()
        sender = threading.Thread(target=self._send_quietly, args=(encode({"kind": "abort", "reason": reason}),),
                                  daemon=True)
        sender.start()
        sender.join(5.0)

    def stop(self) -> None:
        """Stop reading and sending heartbeats (after a failure)."""
        self._stop_beating.set()
        self._stop_reading.set()
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(2.0)

    def _send_quietly(self, message) -> None:
        try:
            self._comm.send_tensors(self._peer, message)
        except Exception as err:  # the peer may already be gone
            logger.info("could not tell peer '%s' about the failure: %s", self._peer, err)

    # --- receiving -------------------------------------------------------------------------------
    def _read(self) -> None:
        last_seen = time.monotonic()
        while not self._stop_reading.is_set():
            try:
                message = self._comm.receive(self._peer, timeout=0.5)
            except TimeoutError:
                silent = time.monotonic() - last_seen
                if silent > self._peer_timeout:
                    self._fail(DataJoinPeerError(
                        f"peer '{self._peer}' ({self._address}) sent nothing, not even a heartbeat, for "
                        f"{silent:.0f} s: it stopped or the network between us is down. Check its log, "
                        f"then restart the data join on both parties (peer_timeout={self._peer_timeout:g} s)"))
                    return
                continue
            except Exception as err:  # the communicator's own liveness check (ConnectionError), or closed
                self._fail(DataJoinPeerError(f"the data join lost peer '{self._peer}' ({self._address}): {err}. "
                                             f"Check its log, then restart the data join on both parties"))
                return
            last_seen = time.monotonic()
            try:
                header, payload = decode(message, self._peer)
                kind = header["kind"]
                if kind == "hb":
                    continue
                if kind == "abort":
                    raise DataJoinPeerError(f"peer '{self._peer}' aborted the data join: "
                                            f"{str(header.get('reason'))[:500]}")
                if kind == "bye":
                    self._bye.set()
                    return
                key = (kind, header.get("bucket"))
                box = self._boxes.get(key)
                if box is None:
                    raise DataJoinPeerError(f"peer '{self._peer}' sent an unexpected message {key}")
                box.put_nowait((header, payload))
            except queue.Full:
                self._fail(DataJoinPeerError(f"peer '{self._peer}' sent message {key} twice"))
                return
            except DataJoinPeerError as err:
                self._fail(err)
                return

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._stop_reading.set()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def get(self, kind: str, bucket: Optional[int] = None) -> Tuple[dict, bytes]:
        """The peer's ``(kind, bucket)`` message: waits while the peer is alive."""
        box = self._boxes[(kind, bucket)]
        while True:
            try:
                return box.get(timeout=0.2)
            except queue.Empty:
                self._raise_if_failed()
                if self._stop_reading.is_set():
                    raise DataJoinPeerError("the data join was stopped")
                if self._bye.is_set():
                    raise DataJoinPeerError(f"peer '{self._peer}' finished without sending {kind} "
                                            f"(bucket {bucket})")

    def finish(self) -> None:
        """Say bye, wait for the peer's bye, stop the threads (the communicator stays open)."""
        self._raise_if_failed()
        self._stop_beating.set()
        self._threads[1].join()
        self._comm.send_tensors(self._peer, encode({"kind": "bye"}))
        self._threads[0].join()
        self._raise_if_failed()
        if not self._bye.is_set():
            raise DataJoinPeerError(f"peer '{self._peer}' did not finish the data join")
