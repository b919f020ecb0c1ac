"""The messages of the two-party step protocol: a kind tag, a step number, scalars, tensors.

A message is the nested dict the communicator moves: ``{"meta": {"kind", "step", scalars...},
tensor_name: tensor | {name: tensor}, ...}``. Everything a party reads from a received message goes
through `Message`, so a malformed message is a `ProtocolError` that names the field (and is sent to
the peer as ABORT by `PeerSession`), never a KeyError from deep inside a training step.
"""
from __future__ import annotations

import enum
from typing import Any, Dict, Mapping, Optional

import numpy as np

__all__ = ["Kind", "ProtocolError", "PeerAborted", "Message", "make_message", "text_array"]

_MAX_TEXT = 4000  # bytes of an ABORT reason or another text field we send


class Kind(enum.IntEnum):
    """What a message is (``meta.kind``); the order of one training step is
    FORWARD -> FORWARD_REPLY -> BACKWARD -> BACKWARD_REPLY -> DECISION."""

    HELLO = 1           # startup handshake (role, settings, step, compression)
    FORWARD = 2         # leader -> follower: activations (or only the step tag)
    FORWARD_REPLY = 3   # follower -> leader: the follower's forward outputs
    BACKWARD = 4        # leader -> follower: gradients for the follower's outputs
    BACKWARD_REPLY = 5  # follower -> leader: gradients for the leader + the follower's gradient statistics
    DECISION = 6        # leader -> follower: global norm, overflow, save flag
    EVAL = 7            # leader -> follower: eval activations
    EVAL_REPLY = 8      # follower -> leader: eval outputs
    DONE = 9            # leader -> follower: the run is over
    ABORT = 10          # either way: the sender stops, `text` says why

    @classmethod
    def name_of(cls, value: Any) -> str:
        try:
            return cls(int(value)).name
        except (ValueError, TypeError):
            return f"unknown kind {value!r}"


class ProtocolError(RuntimeError):
    """The peer sent something this party cannot follow (wrong kind or step, malformed, restarted)."""


class PeerAborted(RuntimeError):
    """The peer stopped and said why (its ABORT message)."""


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "asnumpy"):
        value = value.asnumpy()
    return np.asarray(value)


def text_array(text: str) -> np.ndarray:
    """A string as a uint8 array (the wire carries tensors only)."""
    return np.frombuffer(text.encode("utf-8")[:_MAX_TEXT], np.uint8).copy()


def make_message(kind: Kind, step: int, tensors: Optional[Mapping[str, Any]] = None, **scalars: Any) -> Dict:
    """``{'meta': {kind, step, **scalars}, **tensors}``; a `str` scalar travels as uint8 text."""
    meta: Dict[str, Any] = {"kind": np.asarray(int(kind), np.int32), "step": np.asarray(int(step), np.int64)}
    for key, value in scalars.items():
        if isinstance(value, str):
            meta[key] = text_array(value)
        elif isinstance(value, np.ndarray) and value.ndim:
            meta[key] = value
        else:
            meta[key] = np.asarray(value)
    msg: Dict[str, Any] = {"meta": meta}
    if tensors:
        if "meta" in tensors:
            raise ValueError("a tensor may not be named 'meta' (reserved for the protocol header)")
        msg.update(tensors)
    return msg


class Message:
    """A received message, checked on access: every missing or malformed field is a ProtocolError."""

    def __init__(self, raw: Any, sender: str = "peer") -> None:
        self.sender = sender
        if not isinstance(raw, Mapping) or not isinstance(raw.get("meta"), Mapping):
            keys = list(raw) if isinstance(raw, Mapping) else type(raw).__name__
            raise ProtocolError(f"malformed message from the {sender}: no 'meta' header (got {keys})")
        self.raw = raw
        self.meta: Mapping[str, Any] = raw["meta"]
        kind = self._int("kind")
        try:
            self.kind = Kind(kind)
        except ValueError:
            raise ProtocolError(f"malformed message from the {sender}: meta.kind {kind} is not a message kind "
                                f"(known: {', '.join(k.name for k in Kind)})") from None
        self.step = self._int("step")

    def _field(self, key: str) -> np.ndarray:
        if key not in self.meta:
            raise ProtocolError(f"malformed message from the {self.sender}: {self._where()}meta.{key} is missing "
                                f"(has: {', '.join(sorted(self.meta))})")
        try:
            return _numpy(self.meta[key])
        except Exception as err:  # pylint: disable=broad-except
            raise ProtocolError(f"malformed message from the {self.sender}: {self._where()}meta.{key}: {err}") from None

    def _where(self) -> str:
        kind = getattr(self, "kind", None)
        return f"{kind.name} of step {self.step}: " if kind is not None and hasattr(self, "step") else ""

    def _int(self, key: str) -> int:
        array = self._field(key)
        if array.size != 1 or array.dtype.kind not in "iub":
            raise ProtocolError(f"malformed message from the {self.sender}: {self._where()}meta.{key} must be one "
                                f"integer, got {array.dtype} {array.shape}")
        return int(array.reshape(-1)[0])

    def has(self, key: str) -> bool:
        return key in self.meta

    def number(self, key: str) -> float:
        """A scalar of the header as a Python float."""
        array = self._field(key)
        if array.size != 1 or array.dtype.kind not in "iufb":
            raise ProtocolError(f"malformed message from the {self.sender}: {self._where()}meta.{key} must be one "
                                f"number, got {array.dtype} {array.shape}")
        return float(array.reshape(-1)[0])

    def integer(self, key: str) -> int:
        return self._int(key)

    def flag(self, key: str) -> bool:
        return bool(self.number(key))

    def array(self, key: str) -> np.ndarray:
        return self._field(key)

    def text(self, key: str, default: Optional[str] = None) -> str:
        if key not in self.meta and default is not None:
            return default
        array = self._field(key)
        if array.dtype != np.uint8 or array.ndim > 1:
            raise ProtocolError(f"malformed message from the {self.sender}: {self._where()}meta.{key} must be "
                                f"text (uint8), got {array.dtype} {array.shape}")
        return array.reshape(-1)[:_MAX_TEXT].tobytes().decode("utf-8", "replace")  # bounded: peer-written text

    def tensor(self, *path: str) -> Any:
        """The tensor at `path` (e.g. ``tensor('output', 'hidden_states')``), as received."""
        node: Any = self.raw
        for i, key in enumerate(path):
            if not isinstance(node, Mapping) or key not in node or key == "meta":
                where = ".".join(path[:i + 1])
                have = ", ".join(k for k in node if k != "meta") if isinstance(node, Mapping) else "no dict"
                raise ProtocolError(f"malformed message from the {self.sender}: {self._where()}tensor '{where}' "
                                    f"is missing (has: {have or 'nothing'})")
            node = node[key]
        return node

    def scalars(self) -> Dict[str, Any]:
        """The header's fields besides kind and step, as received (a relay passes them on)."""
        return {k: v for k, v in self.meta.items() if k not in ("kind", "step")}

    def tensors(self) -> Dict[str, Any]:
        """Everything but the header."""
        return {k: v for k, v in self.raw.items() if k != "meta"}

    def describe(self) -> str:
        return f"{self.kind.name} of step {self.step}"
