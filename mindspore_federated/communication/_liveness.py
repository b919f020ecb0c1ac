"""Is the peer still there? Heartbeats, contact times and farewells per peer (no gRPC here).

A communicator beats every peer about once a second (``transport.PeerLink.beat``) and counts any
sign of life in either direction as contact: an answered heartbeat, a heartbeat or a message
arriving from the peer, an acknowledged send. A peer that was in contact and then gives none for
``timeout`` seconds is *gone*; a peer that said goodbye is gone at once, with its reason. A peer
never seen is only waited for (it may start later), but what is wrong with its address is kept,
so that a timeout can say it ("nothing listens on ..."). Misconfigurations that cannot heal by
waiting (the address answers as another party, or is not a communicator) make a peer gone too.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Dict, Optional

logger = logging.getLogger(__name__)

_FIRST_LOG = 5.0   # s after start before a peer not reachable yet is worth a warning
_LOG_EVERY = 30.0  # s between two such warnings
_REMEDY = ("if it died, restart it; a training script restarted with --resume continues from its "
           "last checkpoint")


class PeerHealth:
    """What is known about one peer's liveness; thread-safe."""

    def __init__(self, name: str, address: str, timeout: float):
        self.name, self.address, self.timeout = name, address, timeout
        self._lock = threading.Lock()
        self._contact: Optional[float] = None  # monotonic time of the last sign of life
        self._problem, self._definitive, self._strikes = "", False, 0
        self._goodbye: Optional[str] = None
        self._goodbye_epoch: Optional[int] = None
        self._logged = time.monotonic() - _LOG_EVERY + _FIRST_LOG

    def contact(self, epoch: Optional[int] = None, reached: bool = False) -> None:
        """A sign of life; ``reached``: we reached the peer (clears what was wrong with its address,
        which a call *from* the peer does not prove)."""
        with self._lock:
            self._contact = time.monotonic()
            if reached:
                self._problem, self._definitive, self._strikes = "", False, 0
            if epoch is not None and self._goodbye is not None and epoch != self._goodbye_epoch:
                logger.info("peer '%s' is back (a new process) after it said goodbye", self.name)
                self._goodbye = None

    def goodbye(self, epoch: Optional[int], reason: str) -> None:
        with self._lock:
            self._goodbye, self._goodbye_epoch = reason or "no reason given", epoch
        logger.warning("peer '%s' (%s) stops: %s", self.name, self.address, self._goodbye)

    def failure(self, problem: str, definitive: bool) -> None:
        with self._lock:
            self._problem, self._definitive = problem, definitive
            self._strikes = self._strikes + 1 if definitive else 0
            now, seen = time.monotonic(), self._contact is not None
            log = not seen and now - self._logged >= _LOG_EVERY
            if log:
                self._logged = now
        if log:
            logger.warning("peer '%s' not reachable: %s", self.name, problem)

    @property
    def seen(self) -> bool:
        """Whether the peer was ever in contact."""
        return self._contact is not None

    def farewell(self) -> Optional[str]:
        """The reason the peer gave when it said goodbye (None if it did not, or came back)."""
        return self._goodbye

    @property
    def problem(self) -> str:
        """The last failure to reach the peer, "" when the last attempt succeeded."""
        return self._problem

    def verdict(self) -> str:
        """Why the peer is to be taken for gone ("" while it is not)."""
        with self._lock:
            if self._goodbye is not None:
                return f"it stopped and said why: {self._goodbye}"
            if self._definitive and self._strikes >= 2:
                return self._problem
            if self._contact is not None:
                silent = time.monotonic() - self._contact
                if silent > self.timeout:
                    return (f"no sign of life for {silent:.0f} s ({self._problem or 'no answer'}); "
                            f"{_REMEDY}")
            return ""


class Heartbeats:
    """One thread that beats every peer each ``interval`` s and records the outcomes.

    ``links()`` returns the current ``{peer: PeerLink}`` (links are replaced after failed sends).
    """

    def __init__(self, health: Dict[str, PeerHealth], links: Callable[[], Dict[str, object]], epoch: int,
                 interval: float):
        self._health, self._links, self._epoch, self._interval = health, links, epoch, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="msf-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.beat_all(timeout=max(self._interval, 1.0))
            except Exception:  # noqa: BLE001 - the heartbeat must outlive any surprise; say what it was
                logger.exception("heartbeat round failed")
            self._stop.wait(max(0.0, self._interval - (time.monotonic() - started)))

    def beat_all(self, goodbye: str = "", timeout: float = 2.0, only=None) -> Dict[str, str]:
        """Beat the peers (all, or those in ``only``) at once; returns {peer: problem or ""}."""
        pending = {}
        for name, link in self._links().items():
            if only is None or name in only:
                try:
                    pending[name] = (link, link.beat(self._epoch, goodbye, timeout))
                except ValueError:  # the channel was closed meanwhile
                    continue
        outcome = {}
        for name, (link, future) in pending.items():
            epoch, problem, definitive = link.beat_outcome(future)
            if not problem:
                self._health[name].contact(epoch, reached=True)
            elif not self._stop.is_set():
                self._health[name].failure(problem, definitive)
            outcome[name] = problem
        return outcome

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10)
