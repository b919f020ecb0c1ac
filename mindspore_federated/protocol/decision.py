"""One gradient-norm / overflow / loss-scale decision for both parties.

Each party squares and sums its own (unscaled) gradients and checks them for Inf/NaN. The leader
adds the squared norms -- in float32, in a fixed order -- and ORs the overflow flags, so both parties
clip with the same global norm, skip the same overflowed steps and hence keep the same dynamic loss
scale: split training then updates exactly as one optimizer over the whole model would.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import numpy as np

from .messages import Message

try:  # Protocol is typing-only; keep 3.7 working
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore

__all__ = ["GradientStats", "Decision", "decide", "GlobalNormOptimizer", "sendable_gradient"]

logger = logging.getLogger(__name__)


class GlobalNormOptimizer(Protocol):
    """What a party's optimizer offers to the decision: its local statistics, then the agreed step."""

    def local_scalars(self) -> Tuple[float, bool]:
        """(squared norm of the unscaled gradients, overflow) of the pending gradients."""

    def step(self, global_norm: Any, overflow: Any) -> None:
        """Clip with `global_norm`; update unless `overflow`; update the loss scale."""


@dataclass(frozen=True)
class GradientStats:
    """One party's (or one optimizer's) squared gradient norm and overflow flag."""

    sq_norm: float
    overflow: bool

    @classmethod
    def of(cls, *optimizers: GlobalNormOptimizer, overflow: bool = False) -> "GradientStats":
        """Sum over `optimizers` (float32, in order); `overflow` adds a flag of the caller's own."""
        total = np.float32(0.0)
        flag = bool(overflow)
        with np.errstate(over="ignore", invalid="ignore"):
            for opt in optimizers:
                sq, of = opt.local_scalars()
                total = np.float32(total + np.float32(sq))
                flag = flag or bool(of)
        return cls(float(total), flag)

    @classmethod
    def combine(cls, *stats: "GradientStats") -> "GradientStats":
        """Several parties' shares as one: squared norms summed in float32 in the given order, flags
        ORed (a relay stage adds its downstream stages' share to its own)."""
        total = np.float32(0.0)
        with np.errstate(over="ignore", invalid="ignore"):   # an infinite sum is an overflow, said by decide
            for item in stats:
                total = np.float32(total + np.float32(item.sq_norm))
        return cls(float(total), any(item.overflow for item in stats))

    def as_scalars(self) -> dict:
        """Header fields of the message that carries them (BACKWARD_REPLY)."""
        return {"sq_norm": np.asarray(self.sq_norm, np.float32), "overflow": np.asarray(bool(self.overflow))}

    @classmethod
    def from_message(cls, msg: Message) -> "GradientStats":
        return cls(msg.number("sq_norm"), msg.flag("overflow"))


@dataclass(frozen=True)
class Decision:
    """What both parties apply at the end of a step."""

    global_norm: np.float32
    overflow: bool
    save: bool = False

    def as_scalars(self) -> dict:
        return {"global_norm": np.asarray(self.global_norm, np.float32), "overflow": np.asarray(self.overflow),
                "save": np.asarray(self.save)}

    @classmethod
    def from_message(cls, msg: Message) -> "Decision":
        return cls(np.float32(msg.number("global_norm")), msg.flag("overflow"), msg.flag("save"))

    def apply(self, *optimizers: GlobalNormOptimizer) -> None:
        for opt in optimizers:
            opt.step(self.global_norm, self.overflow)


def decide(*stats: GradientStats, save: bool = False) -> Decision:
    """The global norm (sqrt of the float32 sum of the squared norms, in the given order) and the
    overflow decision (any flag, or a non-finite sum)."""
    total = GradientStats.combine(*stats)
    overflow = total.overflow or not bool(np.isfinite(total.sq_norm))
    with np.errstate(invalid="ignore"):
        return Decision(np.sqrt(np.float32(total.sq_norm)).astype(np.float32), bool(overflow), bool(save))


# Limits of the half-precision wire types: a finite float32 beyond them cannot be sent as fp16/bf16.
_HALF_LIMIT = {"fp16": 65504.0, "bf16": 3.3895313892515355e38}


def sendable_gradient(grad: Any, config: Optional[Any]) -> Tuple[Any, bool]:
    """(gradient to send, overflow) under the wire compression `config` of its tensor.

    A lossy compressor cannot encode Inf/NaN (min_max) or values beyond the half range (fp16/bf16).
    Such a gradient only occurs on an overflowed step, which both parties skip anyway: it is sent as
    zeros, and the returned flag makes the step an overflow in the decision.
    """
    if config is None or getattr(config, "compress_type", None) not in ("min_max", "fp16", "bf16"):
        return grad, False
    array = np.asarray(grad.asnumpy() if hasattr(grad, "asnumpy") else grad)
    if array.size == 0:
        return grad, False
    finite = bool(np.isfinite(array).all())
    if finite and config.compress_type in _HALF_LIMIT:
        finite = float(np.max(np.abs(array))) <= _HALF_LIMIT[config.compress_type]
    if finite:
        return grad, False
    logger.info("a gradient for the peer is not representable under %s (overflow): sent as zeros, "
                "the step is skipped", config.compress_type)
    zeros = np.zeros(array.shape, array.dtype)
    if hasattr(grad, "asnumpy"):
        from mindspore import Tensor  # pylint: disable=import-outside-toplevel
        return Tensor(zeros), True
    return zeros, True
