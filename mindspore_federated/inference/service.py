"""Serve a model part to remote generation sessions (the party that holds the middle layers).

The client (party A: embeddings and head) opens a session, then sends one request per step with
the tensors the model part needs (for a transformer: the new positions' hidden states and their
attention-mask rows) and gets the part's outputs back; the part's state (its key/value caches)
stays with the server, one per session (`SessionManager`). Messages are dicts of tensors, so any
transport that moves them works: `VerticalFederatedCommunicator` across processes (`serve`),
or a direct call in one process (`InferenceClient.in_process`).

Message `meta` fields: `kind` (OPEN, RUN, CLOSE, BYE from the client; OK, ERROR from the server),
`session` (int64 chosen by the client), `code` and `text` (errors), plus what the backend reads
(e.g. `start`). The backend interface:

    new_session() -> state          # state.close() frees it; state.nbytes (optional) its size
    check_open(meta) -> None        # raise ValueError when the client's model settings do not match
    run(state, message) -> dict     # validate (ValueError) before computing; returns output tensors
"""
from __future__ import annotations

import logging
import secrets
import threading
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

import numpy as np

from mindspore_federated.communication.codec import to_numpy
from mindspore_federated.inference.session import (ERRORS_BY_CODE, BadRequest, SessionError, SessionManager,
                                                   UnknownSession)

logger = logging.getLogger(__name__)

__all__ = ["Kind", "InferenceService", "InferenceClient", "RemoteSession", "meta_int", "meta_text", "text_array"]


class Kind:
    """meta.kind of inference messages (distinct from the training protocol's kinds 1..10)."""

    OPEN, RUN, CLOSE, BYE, OK, ERROR = 21, 22, 23, 24, 25, 26
    NAMES = {21: "OPEN", 22: "RUN", 23: "CLOSE", 24: "BYE", 25: "OK", 26: "ERROR"}


def text_array(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8")[:4000], np.uint8).copy()


def meta_text(meta: Mapping, key: str, default: str = "") -> str:
    value = meta.get(key)
    if value is None:
        return default
    return bytes(to_numpy(value).astype(np.uint8).reshape(-1).tolist()).decode("utf-8", "replace")


def meta_int(meta: Mapping, key: str) -> int:
    """An integer field of meta; BadRequest when absent or not one integer."""
    value = meta.get(key)
    if value is None:
        raise BadRequest(f"request without meta.{key}")
    array = to_numpy(value)
    if array.size != 1 or array.dtype.kind not in "iu":
        raise BadRequest(f"meta.{key} must be one integer, got dtype {array.dtype} shape {list(array.shape)}")
    return int(array.reshape(-1)[0])


def _message(kind: int, session: int = 0, tensors: Optional[Mapping] = None, **meta: Any) -> Dict:
    # `step` (always 0) lets a training party that receives this by mistake report it cleanly
    head: Dict[str, Any] = {"kind": np.asarray(kind, np.int32), "session": np.asarray(session, np.int64),
                            "step": np.asarray(0, np.int64)}
    for key, value in meta.items():
        head[key] = text_array(value) if isinstance(value, str) else np.asarray(value)
    msg: Dict[str, Any] = {"meta": head}
    if tensors:
        msg.update(tensors)
    return msg


class InferenceService:
    """Answers OPEN / RUN / CLOSE / BYE requests for a backend, with bounded, isolated sessions.

    `handle(peer, message)` never raises for a bad request: it answers ERROR with a code and a
    message the client turns into the matching exception (ServerFull, UnknownSession, BadRequest).
    Computation is serialized (one request at a time); sessions interleave freely.
    """

    def __init__(self, backend: Any, max_sessions: int = 4, idle_timeout: float = 300.0, **manager_kw: Any) -> None:
        self.backend = backend
        self.sessions = SessionManager(backend.new_session, max_sessions, idle_timeout, **manager_kw)
        self._compute = threading.Lock()
        self.requests = 0
        self.received_keys: set = set()  # names of the tensors clients sent (what this party got to see)

    def handle(self, peer: str, msg: Mapping) -> Dict:
        meta = msg.get("meta") if isinstance(msg, Mapping) else None
        if not isinstance(meta, Mapping):
            return _message(Kind.ERROR, code=BadRequest.code, text="malformed request: no meta")
        session = 0
        try:
            kind = meta_int(meta, "kind")
            session = meta_int(meta, "session") if kind != Kind.BYE else 0
            key = (peer, session)
            self.requests += 1
            if kind == Kind.RUN:
                self.received_keys.update(k for k in msg if k != "meta")
                state = self.sessions.get(key)
                with self._compute:
                    outputs = self.backend.run(state, msg)
                return _message(Kind.OK, session, outputs)
            if kind == Kind.OPEN:
                try:
                    self.backend.check_open(meta)
                except ValueError as err:
                    raise BadRequest(str(err)) from None
                self.sessions.open(key)
                logger.debug("session %d of %s opened (%d/%d in use)", session, peer, len(self.sessions),
                            self.sessions.max_sessions)
                return _message(Kind.OK, session)
            if kind == Kind.CLOSE:
                if not self.sessions.close(key):
                    raise UnknownSession(f"no session {session} to close (already closed or expired)")
                return _message(Kind.OK, session)
            if kind == Kind.BYE:
                closed = self.sessions.close_where(lambda k: k[0] == peer)
                if closed:
                    logger.info("%s left; closed its %d open sessions", peer, closed)
                return _message(Kind.OK)
            raise BadRequest(f"unexpected message kind {Kind.NAMES.get(kind, kind)} (expected OPEN, RUN, CLOSE "
                             f"or BYE: is the peer running another program, e.g. training?)")
        except (SessionError, ValueError) as err:  # ValueError: the backend's validation of the request
            code = err.code if isinstance(err, SessionError) else BadRequest.code
            logger.warning("refused a request of %s (session %d): %s", peer, session, err)
            return _message(Kind.ERROR, session, code=code, text=str(err))

    def serve(self, communicator: Any, peers: Iterable[str], stop: Optional[threading.Event] = None,
              until_bye: bool = True, poll: float = 1.0) -> None:
        """Answer the peers' requests over `communicator` until every peer said BYE (`until_bye`) or
        `stop` is set. One thread per peer; idle sessions expire while waiting."""
        stop = stop or threading.Event()
        peers = list(peers)
        done = {peer: threading.Event() for peer in peers}

        def loop(peer: str) -> None:
            while not stop.is_set():
                try:
                    msg = communicator.receive(peer, timeout=poll)
                except TimeoutError:
                    self.sessions.expire_idle()
                    continue
                except Exception as err:  # pylint: disable=broad-except
                    logger.warning("receiving from %s failed: %s; closing its sessions", peer, err)
                    self.sessions.close_where(lambda k: k[0] == peer)
                    stop.wait(poll)
                    continue
                reply = self.handle(peer, msg)
                try:
                    communicator.send_tensors(peer, reply)
                except Exception as err:  # pylint: disable=broad-except
                    logger.warning("cannot answer %s (%s); closing its sessions", peer, err)
                    self.sessions.close_where(lambda k: k[0] == peer)
                    continue
                if _is_bye(msg):
                    done[peer].set()
                    if until_bye and all(e.is_set() for e in done.values()):
                        stop.set()

        threads = [threading.Thread(target=loop, args=(p,), name=f"inference-{p}", daemon=True) for p in peers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def _is_bye(msg: Mapping) -> bool:
    try:
        return meta_int(msg["meta"], "kind") == Kind.BYE
    except (SessionError, KeyError, TypeError):
        return False


class InferenceClient:
    """The client side: `open()` a session, `run` requests in it, `close()`; `bye()` when done.

    `send(message)` / `receive() -> message` move the dicts (e.g. a communicator's send_tensors /
    receive bound to the server's name). Calls are serialized, so threads may share one client.
    """

    def __init__(self, send: Callable[[Dict], None], receive: Callable[[], Mapping]) -> None:
        self._send = send
        self._receive = receive
        self._lock = threading.Lock()

    @classmethod
    def in_process(cls, service: InferenceService, peer: str = "local",
                   transport: Optional[Callable[[Dict], Dict]] = None) -> "InferenceClient":
        """A client calling `service` directly; `transport` may re-encode each message (wire tests, bytes)."""
        box: list = []
        move = transport or (lambda m: m)
        return cls(lambda m: box.append(move(service.handle(peer, move(m)))), box.pop)

    def request(self, kind: int, session: int = 0, tensors: Optional[Mapping] = None, **meta: Any) -> Mapping:
        with self._lock:
            self._send(_message(kind, session, tensors, **meta))
            reply = self._receive()
        head = reply.get("meta", {})
        got_kind = meta_int(head, "kind")
        if got_kind == Kind.ERROR:
            error = ERRORS_BY_CODE.get(meta_int(head, "code"), SessionError)
            raise error(meta_text(head, "text", "the server refused the request"))
        if got_kind != Kind.OK:
            raise SessionError(f"the server answered with message kind {got_kind}, not an inference reply (is it "
                               f"running another program?): {meta_text(head, 'text', 'no explanation')}")
        got = meta_int(head, "session")
        if got != session:
            raise SessionError(f"reply for session {got} while waiting for session {session}")
        return reply

    def open(self, **meta: Any) -> "RemoteSession":
        session = secrets.randbits(62) + 1
        self.request(Kind.OPEN, session, **meta)
        return RemoteSession(self, session)

    def bye(self) -> None:
        self.request(Kind.BYE)


class RemoteSession:
    """One open session at the server."""

    def __init__(self, client: InferenceClient, session: int) -> None:
        self.client = client
        self.session = session
        self.closed = False

    def run(self, tensors: Mapping, **meta: Any) -> Mapping:
        if self.closed:
            raise UnknownSession(f"session {self.session} is closed")
        reply = self.client.request(Kind.RUN, self.session, tensors, **meta)
        return {k: v for k, v in reply.items() if k != "meta"}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.client.request(Kind.CLOSE, self.session)
