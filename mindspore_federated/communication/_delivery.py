"""Receiver-side exactly-once, in-order delivery per peer (no gRPC here, unit-testable).

Sequence rule. Every sending communicator draws a random ``epoch`` at start and numbers its
messages to each peer 1, 2, 3, ...; it sends message n+1 only after n was acknowledged and retries
n (same epoch, same seq) until then. The receiver remembers, per sender, the epoch and the last
delivered seq:

- same epoch, seq <= last: a retry of a delivered message -> acknowledged as duplicate, dropped;
- same epoch, seq == last + 1: delivered;
- same epoch, seq > last + 1: a gap (cannot happen with a well-behaved sender) -> refused;
- no state yet (this receiver just started) or a newer epoch (the sender restarted, or opened a new
  link after a failed send): the message is delivered and its seq becomes the baseline;
- an older epoch: a stale or replayed message -> refused. Epochs of a sender only move forward
  within a receiver's lifetime, so a message of an abandoned link can never be delivered again.

Epochs are ordered because a sender draws them from :func:`next_epoch` (nanoseconds of the wall
clock, strictly increasing within a process). Should a restarted sender's clock be behind, the
receiver's refusal names its current epoch and the sender moves past it (see transport.py).

So a receiver restarted while a message was in flight gets the sender's retry as its first message
and delivers it once. Limit: the receiver's state lives in memory; if it delivered a message to its
queue and died before the acknowledgement left, the retry is delivered again to the new process
(which never saw the first copy), i.e. exactly once per receiver process.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Optional

logger = logging.getLogger(__name__)

_POLL = 0.1  # seconds between checks of "is the sender still waiting?" while blocked


_epoch_lock = threading.Lock()
_last_epoch = 0


def next_epoch(at_least: int = 0) -> int:
    """A sender epoch larger than every one this process drew before, and at least ``at_least``."""
    global _last_epoch
    with _epoch_lock:
        _last_epoch = min(max(_last_epoch + 1, time.time_ns(), at_least), (1 << 63) - 1)
        return _last_epoch


class GapError(Exception):
    """A sequence number beyond the next expected one."""


class StaleEpochError(Exception):
    """A message of an epoch older than the sender's current one (a replay or a stale stream)."""

    def __init__(self, message: str, current: int):
        super().__init__(message)
        self.current = current


class PeerGone(Exception):
    """The peer is gone (it said goodbye, or gave no sign of life for too long)."""


class Abandoned(Exception):
    """The sender went away (or the receiver is closing) before the message could be queued."""


class Inbox:
    """Bounded queue of decoded messages from one peer plus its sequence state."""

    def __init__(self, peer: str, maxsize: int):
        self.peer = peer
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=maxsize)
        self._lock = threading.Lock()  # serialises deliveries from this peer
        self._epoch: Optional[int] = None
        self._last = 0
        self.closed = threading.Event()

    def classify(self, epoch: int, seq: int) -> str:
        """'deliver', 'duplicate', 'gap' or 'stale' for a message announced by its first chunk (advisory)."""
        epoch_now, last = self._epoch, self._last
        if epoch_now is not None and epoch < epoch_now:
            return "stale"
        if epoch_now is None or epoch != epoch_now or seq == last + 1:
            return "deliver"
        return "duplicate" if seq <= last else "gap"

    @property
    def epoch(self) -> Optional[int]:
        """The sender's current epoch (None before its first message)."""
        return self._epoch

    def deliver(self, epoch: int, seq: int, item: Any, is_active: Callable[[], bool]) -> bool:
        """Queue ``item`` unless (epoch, seq) was delivered already; True when queued.

        Blocks while the queue is full (back-pressure on the sender); raises :class:`Abandoned`
        when ``is_active()`` turns false or the inbox closes first, :class:`GapError` on a gap,
        :class:`StaleEpochError` for an epoch older than the current one.
        """
        while not self._lock.acquire(timeout=_POLL):
            if not is_active() or self.closed.is_set():
                raise Abandoned(f"sender '{self.peer}' went away while waiting to deliver seq {seq}")
        try:
            if self._epoch is not None and epoch < self._epoch:
                raise StaleEpochError(f"message {seq} from '{self.peer}' has epoch {epoch}, older than "
                                      f"its current epoch {self._epoch} (a replayed or stale message)",
                                      self._epoch)
            if self._epoch is not None and epoch == self._epoch:
                if seq <= self._last:
                    return False
                if seq != self._last + 1:
                    raise GapError(f"seq {seq} from '{self.peer}' skips ahead of {self._last + 1}")
            elif self._epoch is not None:
                logger.info("peer '%s' restarted (new epoch); its sequence restarts at %d", self.peer, seq)
            while True:
                if not is_active() or self.closed.is_set():
                    raise Abandoned(f"sender '{self.peer}' went away while seq {seq} waited for queue space")
                try:
                    self._queue.put(item, timeout=_POLL)
                    break
                except queue.Full:
                    continue
            self._epoch, self._last = epoch, seq
            return True
        finally:
            self._lock.release()

    def get(self, timeout: Optional[float], gone: Callable[[], str] = lambda: "") -> Any:
        """Next message; raises queue.Empty after ``timeout`` s, Abandoned once closed, PeerGone
        (with its reason) once ``gone()`` says why the peer is gone and nothing is queued."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.closed.is_set() and self._queue.empty():
                raise Abandoned("communicator closed")
            wait = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            try:
                return self._queue.get(timeout=max(wait, 0))
            except queue.Empty:
                reason = gone()
                if reason and self._queue.empty():
                    raise PeerGone(reason) from None
                if deadline is not None and time.monotonic() >= deadline:
                    raise
