"""Generation sessions held by the party that serves a model part (party B): bounded and isolated.

Each session owns one state object (for a transformer: its key/value caches). Sessions are keyed
by (peer name, session id), so a peer can only reach its own sessions. The number of sessions is
bounded (memory = sessions x per-session state), idle ones are expired, and a closed or expired
session's state is released at once (`state.close()`, then dropped).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, Hashable, List

logger = logging.getLogger(__name__)

__all__ = ["SessionError", "ServerFull", "UnknownSession", "BadRequest", "SessionManager"]


class SessionError(RuntimeError):
    """A request the serving party refused; `code` travels in the reply so the client raises the same class."""

    code = 1


class ServerFull(SessionError):
    """All sessions are in use: retry later or raise the server's --max_sessions."""

    code = 2


class UnknownSession(SessionError):
    """No such session here (never opened, closed, or expired after the idle timeout)."""

    code = 3


class BadRequest(SessionError):
    """The request itself is wrong (shapes, positions, sequence length, model settings)."""

    code = 4


ERRORS_BY_CODE = {cls.code: cls for cls in (SessionError, ServerFull, UnknownSession, BadRequest)}


class _Entry:
    __slots__ = ("state", "last_used")

    def __init__(self, state: Any, now: float) -> None:
        self.state = state
        self.last_used = now


class SessionManager:
    """At most `max_sessions` live states made by `factory`; idle ones expire after `idle_timeout` s.

    Thread-safe. `open` never evicts a live session: a full server refuses (ServerFull) at once,
    before any memory is spent, instead of failing later.
    """

    def __init__(self, factory: Callable[[], Any], max_sessions: int = 4, idle_timeout: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if int(max_sessions) < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        if not float(idle_timeout) > 0:
            raise ValueError(f"idle_timeout must be > 0 seconds, got {idle_timeout}")
        self._factory = factory
        self.max_sessions = int(max_sessions)
        self.idle_timeout = float(idle_timeout)
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: "OrderedDict[Hashable, _Entry]" = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def nbytes(self) -> int:
        """Bytes held by the live states (their `nbytes`, where they tell)."""
        with self._lock:
            return sum(int(getattr(e.state, "nbytes", 0)) for e in self._sessions.values())

    def open(self, key: Hashable) -> Any:
        self.expire_idle()
        with self._lock:
            if key in self._sessions:
                raise BadRequest(f"session {key[-1] if isinstance(key, tuple) else key} is already open")
            if len(self._sessions) >= self.max_sessions:
                raise ServerFull(f"the server is full: all {self.max_sessions} sessions are in use (each is "
                                 f"freed when its client closes it or after {self.idle_timeout:g} s idle); "
                                 f"retry later, or start the server with more --max_sessions")
            entry = _Entry(self._factory(), self._clock())
            self._sessions[key] = entry
            return entry.state

    def get(self, key: Hashable) -> Any:
        with self._lock:
            entry = self._sessions.get(key)
            if entry is None:
                raise UnknownSession(f"no session {key[-1] if isinstance(key, tuple) else key} here (never "
                                     f"opened, already closed, or expired after {self.idle_timeout:g} s idle)")
            entry.last_used = self._clock()
            return entry.state

    def close(self, key: Hashable) -> bool:
        with self._lock:
            entry = self._sessions.pop(key, None)
        if entry is None:
            return False
        _release(entry.state)
        return True

    def close_where(self, predicate: Callable[[Hashable], bool]) -> int:
        """Close every session whose key matches (e.g. all of a peer that left)."""
        with self._lock:
            keys = [k for k in self._sessions if predicate(k)]
        return sum(self.close(k) for k in keys)

    def expire_idle(self) -> List[Hashable]:
        now = self._clock()
        with self._lock:
            stale = [k for k, e in self._sessions.items() if now - e.last_used > self.idle_timeout]
        for key in stale:
            if self.close(key):
                logger.info("session %s expired after %g s idle", key, self.idle_timeout)
        return stale

    def stats(self) -> Dict[str, int]:
        return {"sessions": len(self), "max_sessions": self.max_sessions, "bytes": self.nbytes()}


def _release(state: Any) -> None:
    close = getattr(state, "close", None)
    if callable(close):
        close()
