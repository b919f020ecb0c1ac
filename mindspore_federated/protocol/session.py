"""One party's end of the two-party protocol: handshake, step-checked exchange, ABORT, decision.

`PeerSession` wraps a channel (`LocalChannel` or `CommunicatorChannel`). Every received message is
checked against what this party expects -- kind and step -- and anything else (a malformed message,
a peer that restarted, a step from another point of the run) raises `ProtocolError` after telling
the peer why (ABORT), so both parties stop within one message and both logs say the same thing.
`FollowerLoop` is the whole reactive side of a follower that holds one sub-network; the model only
supplies a `FollowerHandler`.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .decision import Decision, GradientStats, decide
from .messages import Kind, Message, PeerAborted, ProtocolError, make_message

try:
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore

__all__ = ["PeerSession", "FollowerHandler", "FollowerLoop", "describe_settings_mismatch"]

logger = logging.getLogger(__name__)

_UNKNOWN = "?"


def _encode_settings(settings: Mapping[str, Any]) -> str:
    """'name=value' lines; None = not known to this party (not compared)."""
    lines = []
    for name, value in settings.items():
        if "\n" in str(name) or "=" in str(name):
            raise ValueError(f"setting name {name!r} may not contain '=' or a newline")
        if value is None:
            text = _UNKNOWN
        elif isinstance(value, bool):
            text = str(int(value))
        elif isinstance(value, float) and value.is_integer():
            text = str(int(value))
        else:
            text = str(value)
        lines.append(f"{name}={text}")
    return "\n".join(lines)


def _decode_settings(text: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for line in text.split("\n"):
        if line:
            name, _, value = line.partition("=")
            out[name] = value
    return out


def describe_settings_mismatch(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> str:
    """'hidden_size: ours 64, peer 128; ...' for the settings both know and that differ."""
    mine, peer = _decode_settings(_encode_settings(ours)), _decode_settings(_encode_settings(theirs))
    parts = []
    for name, value in mine.items():
        if name not in peer:
            parts.append(f"{name}: ours {value}, unknown to the peer (different versions?)")
        elif _UNKNOWN not in (value, peer[name]) and value != peer[name]:
            parts.append(f"{name}: ours {value}, peer {peer[name]}")
    extra = [name for name in peer if name not in mine]
    if extra:
        parts.append(f"the peer also sets {', '.join(extra)} (different versions?)")
    return "; ".join(parts)


class PeerSession:
    """This party's end of the protocol with its one peer.

    Args:
        channel: `LocalChannel` or `CommunicatorChannel` to the peer.
        role / peer_role: names used in messages and errors ("leader" / "follower").
        global_step: returns the number of steps this party has completed (sent in the handshake,
            used in errors).
        pump: called after each message sent (not the handshake): in a one-process run it lets the
            peer handle the message at once; across processes it does nothing.
        remedy: appended to the errors that stop a run, e.g. "restart both with --resume".
    """

    def __init__(self, channel: Any, role: str, peer_role: str, global_step: Callable[[], int],
                 pump: Callable[[], Any] = lambda: None,
                 remedy: str = "stop both parties and restart both with --resume") -> None:
        self.channel = channel
        self.role, self.peer_role = role, peer_role
        self._global_step = global_step
        self.pump = pump
        self.remedy = remedy
        self.aborted = False

    @property
    def global_step(self) -> int:
        return int(self._global_step())

    # ---- sending
    def send(self, kind: Kind, step: int, tensors: Optional[Mapping[str, Any]] = None, **scalars: Any) -> None:
        try:
            self.channel.send(make_message(kind, step, tensors, **scalars))
        except ConnectionError as err:
            self._raise_queued_abort(err)
            raise
        self.pump()

    def _raise_queued_abort(self, err: ConnectionError) -> None:
        """A peer that stops sends ABORT before it goes: if that message is waiting, raise it
        (PeerAborted with the peer's reason) rather than the bare connection error."""
        try:
            self.receive_raw(timeout=1.0)
        except PeerAborted as aborted:
            raise aborted from err
        except Exception:  # pylint: disable=broad-except  (nothing queued: the connection error stands)
            return

    def abort(self, reason: str) -> None:
        """Tell the peer why this party stops (best effort, bounded wait; at most once)."""
        if self.aborted:
            return
        self.aborted = True
        try:
            self.channel.try_send(make_message(Kind.ABORT, self.global_step, text=reason))
        except Exception:  # pylint: disable=broad-except  (the peer may be gone)
            logger.debug("could not tell the %s why we stop", self.peer_role, exc_info=True)
        goodbye = getattr(self.channel, "goodbye", None)
        if callable(goodbye):
            goodbye(reason)

    def why_stopped(self, err: BaseException) -> str:
        """What to tell a peer when this party stops because of `err`: a protocol reason (the other
        peer's ABORT, a ProtocolError) as it is, anything else as 'the <role> stopped: <error>'."""
        if isinstance(err, (PeerAborted, ProtocolError)):
            return str(err)
        return f"the {self.role} stopped: {type(err).__name__}: {err} -- {self.remedy}"

    def report(self, err: ProtocolError) -> None:
        """ABORT the peer with a ProtocolError raised elsewhere (no-op if it was already reported)."""
        text = str(err)
        self.abort(text if self.remedy in text else f"{text} -- {self.remedy}")

    def fail(self, reason: str) -> ProtocolError:
        """ABORT the peer with `reason` and return the error to raise."""
        self.abort(reason)
        return ProtocolError(reason)

    # ---- receiving
    def receive_raw(self, timeout: Optional[float] = None) -> Message:
        """The next message, parsed; ABORT raises PeerAborted, a malformed one ProtocolError."""
        raw = self.channel.recv(timeout)
        try:
            msg = Message(raw, self.peer_role)
        except ProtocolError as err:
            raise self.fail(f"{err} -- {self.remedy}") from None
        if msg.kind == Kind.ABORT:
            self.aborted = True  # nothing to tell a peer that has stopped
            raise PeerAborted(f"the {self.peer_role} stopped: {msg.text('text', '(no reason given)')}")
        return msg

    def receive(self, expect: Mapping[Kind, Optional[int]], timeout: Optional[float] = None) -> Message:
        """The next message, which must be one of `expect` (kind -> step, None = any step)."""
        msg = self.receive_raw(timeout)
        if msg.kind in expect and expect[msg.kind] in (None, msg.step):
            return msg
        completed = self.global_step
        if msg.kind == Kind.HELLO:
            raise self.fail(f"the {self.peer_role} restarted: it sent a startup handshake at step {msg.step} "
                            f"while this {self.role} is in step {completed + 1} (steps completed: {completed}). "
                            f"{self.remedy.capitalize()} (both need a checkpoint of the same step)")
        wanted = ", ".join(f"{k.name}" + ("" if s is None else f" of step {s}") for k, s in expect.items())
        raise self.fail(f"out of step with the {self.peer_role}: expected {wanted}, got {msg.describe()} "
                        f"(this {self.role} has completed {completed} steps) -- {self.remedy}")

    def expect(self, kind: Kind, step: Optional[int], timeout: Optional[float] = None) -> Message:
        return self.receive({kind: step}, timeout)

    def exchange(self, kind: Kind, step: int, tensors: Optional[Mapping[str, Any]], reply: Kind,
                 timeout: Optional[float] = None, **scalars: Any) -> Message:
        """Send one message and receive the peer's reply of the same step."""
        self.send(kind, step, tensors, **scalars)
        return self.expect(reply, step, timeout)

    # ---- startup handshake
    def hello(self, settings: Mapping[str, Any], compression: str = "none", **extra: Any) -> None:
        """Send this party's handshake: role, settings, completed steps, wire compression, `extra`."""
        self.channel.send(make_message(Kind.HELLO, self.global_step, role=self.role,
                                       settings=_encode_settings(settings), compression=compression, **extra))

    def check_hello(self, msg: Message, settings: Mapping[str, Any], compression: str = "none") -> Message:
        """Validate the peer's handshake; every difference is listed in one error."""
        if msg.kind != Kind.HELLO:
            raise self.fail(f"expected the {self.peer_role}'s startup handshake but got {msg.describe()}: the "
                            f"{self.peer_role} is mid-run (at step {msg.step}) while this {self.role} starts at "
                            f"step {self.global_step}. {self.remedy.capitalize()}")
        errors = []
        peer_role = msg.text("role")
        if peer_role != self.peer_role:
            errors.append(f"the peer is a {peer_role}, expected a {self.peer_role} (both started as {self.role}?)")
        mismatch = describe_settings_mismatch(settings, _decode_settings(msg.text("settings")))
        if mismatch:
            errors.append(f"model/optimizer settings differ between the parties: {mismatch}")
        peer_compression = msg.text("compression")
        if peer_compression != compression:
            errors.append(f"wire compression differs between the parties: --compress ours {compression}, "
                          f"peer {peer_compression} (start both with the same --compress)")
        if msg.step != self.global_step:
            errors.append(f"the {self.role} starts at step {self.global_step} but the {self.peer_role} at step "
                          f"{msg.step} (resume both from the same checkpoint step, or neither)")
        if errors:
            raise self.fail("startup handshake failed: " + "; ".join(errors))
        return msg

    def handshake(self, settings: Mapping[str, Any], compression: str = "none", timeout: Optional[float] = None,
                  **extra: Any) -> Message:
        """Send ours first, then check the peer's (so neither waits on the other)."""
        self.hello(settings, compression, **extra)
        try:
            msg = self.receive_raw(timeout)
        except TimeoutError as err:
            raise TimeoutError(f"{err} -- no startup handshake from the {self.peer_role}: is it running, and is "
                               f"the address we send to the one it listens on (and ours the one it sends to)?"
                               ) from err
        return self.check_hello(msg, settings, compression)

    # ---- the decision (leader side)
    def agree(self, step: int, ours: GradientStats, reply: Message, save: bool = False) -> Decision:
        """Combine our statistics with those in the follower's BACKWARD_REPLY, send the DECISION."""
        decision = decide(ours, GradientStats.from_message(reply), save=save)
        self.send(Kind.DECISION, step, **decision.as_scalars())
        return decision

    def finish(self) -> None:
        """Tell the follower the run is over."""
        self.send(Kind.DONE, self.global_step)


class FollowerHandler(Protocol):
    """What a follower's model supplies to `FollowerLoop` (one method per leader message)."""

    def forward(self, msg: Message) -> Mapping[str, Any]:
        """Run the forward pass on a FORWARD message; returns the tensors for the leader."""

    def backward(self, msg: Message) -> Tuple[Mapping[str, Any], GradientStats]:
        """Run the backward pass on a BACKWARD message; returns (tensors for the leader, statistics)."""

    def apply(self, decision: Decision) -> None:
        """Apply the agreed update (and save a checkpoint when `decision.save`)."""

    def evaluate(self, msg: Message) -> Mapping[str, Any]:
        """Eval forward pass on an EVAL message; returns the tensors for the leader."""

    # Optional, for a handler with peers of its own (a relay stage, `FLModelRelay`):
    # `finish()` when the leader said DONE, `stop(reason)` when the loop stops on an error.


class FollowerLoop:
    """The follower's side of the run: FORWARD -> BACKWARD -> DECISION per step, EVAL between steps,
    DONE at the end. Anything else, or a handler error, stops both parties (ABORT); a handler with
    peers of its own hears of both ends (its optional `finish()` and `stop(reason)`)."""

    def __init__(self, session: PeerSession, handler: FollowerHandler, completed_steps: int = 0) -> None:
        self.session = session
        self.handler = handler
        self.completed = int(completed_steps)
        self.phase = "idle"

    def _expected(self) -> Dict[Kind, Optional[int]]:
        step = self.completed + 1
        if self.phase == "forward":
            return {Kind.BACKWARD: step}
        if self.phase == "backward":
            return {Kind.DECISION: step}
        return {Kind.FORWARD: step, Kind.EVAL: None, Kind.DONE: self.completed}

    def serve_one(self, timeout: Optional[float] = None) -> bool:
        """Handle the leader's next message; False once the leader said DONE."""
        msg = self.session.receive(self._expected(), timeout)
        try:
            if msg.kind == Kind.DONE:
                finish = getattr(self.handler, "finish", None)
                if finish is not None:
                    finish()
                return False
            if msg.kind == Kind.FORWARD:
                self.session.send(Kind.FORWARD_REPLY, msg.step, self.handler.forward(msg))
                self.phase = "forward"
            elif msg.kind == Kind.BACKWARD:
                tensors, stats = self.handler.backward(msg)
                self.session.send(Kind.BACKWARD_REPLY, msg.step, tensors, **stats.as_scalars())
                self.phase = "backward"
            elif msg.kind == Kind.DECISION:
                self.handler.apply(Decision.from_message(msg))
                self.completed += 1
                self.phase = "idle"
            elif msg.kind == Kind.EVAL:
                self.session.send(Kind.EVAL_REPLY, msg.step, self.handler.evaluate(msg))
        except PeerAborted:
            raise
        except ProtocolError as err:   # e.g. a tensor missing from the message
            self.session.report(err)
            raise
        except Exception as err:
            self.session.abort(f"the {self.session.role} failed in {msg.describe()}: {type(err).__name__}: {err} "
                               f"-- {self.session.remedy}")
            raise
        return True

    def run(self, timeout: Optional[float] = None,
            on_step: Optional[Callable[[int], Any]] = None) -> int:
        """Serve until DONE; `on_step(completed)` after each agreed step. Returns the completed steps."""
        try:
            while True:
                before = self.completed
                if not self.serve_one(timeout):
                    return self.completed
                if on_step is not None and self.completed != before:
                    on_step(self.completed)
        except BaseException as err:
            stop = getattr(self.handler, "stop", None)
            if stop is not None:
                stop(self.session.why_stopped(err))
            raise
