"""Keep a copy of what a party receives, at its own end of the channel (the auditor's tap)."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

__all__ = ["ReceivedTensorRecorder"]


def _to_numpy(value: Any) -> np.ndarray:
    return np.array(value.asnumpy() if hasattr(value, "asnumpy") else value)


class ReceivedTensorRecorder:
    """Wraps the receiving end of a channel (any object with ``recv(timeout)``) and records the
    named top-level tensors of every message that carries all of them.

    Because it sits where the peer sits, it records exactly what that peer gets: after decoding,
    with compression error or EmbeddingDP codes included. ``when(msg)`` selects messages (e.g. only
    training steps). Everything else is delegated to the wrapped channel.
    """

    def __init__(self, inner: Any, names: Sequence[str] = ("embedding_table", "attention_mask"),
                 when: Optional[Callable[[Mapping], bool]] = None) -> None:
        if not names:
            raise ValueError("ReceivedTensorRecorder: names must list at least one tensor to record")
        self.inner = inner
        self.names = tuple(names)
        self.when = when
        self.records: Dict[str, List[np.ndarray]] = {name: [] for name in self.names}

    def recv(self, timeout: Optional[float] = None) -> Mapping:
        msg = self.inner.recv(timeout)
        if all(name in msg for name in self.names) and (self.when is None or self.when(msg)):
            for name in self.names:
                self.records[name].append(_to_numpy(msg[name]))
        return msg

    def __len__(self) -> int:
        return len(self.records[self.names[0]])

    def arrays(self) -> Dict[str, np.ndarray]:
        """name -> array [messages, ...] (tensors of one name must have one shape)."""
        out = {}
        for name, values in self.records.items():
            if not values:
                raise ValueError(f"ReceivedTensorRecorder: no message with {', '.join(self.names)} was received")
            shapes = {v.shape for v in values}
            if len(shapes) != 1:
                raise ValueError(f"ReceivedTensorRecorder: '{name}' arrived with several shapes {sorted(shapes)}")
            out[name] = np.stack(values)
        return out

    def save(self, path: str) -> str:
        """Write the recording as a compressed .npz (one array per name)."""
        np.savez_compressed(path, **self.arrays())
        return path

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
