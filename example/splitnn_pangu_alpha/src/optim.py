"""The PanGu-alpha update rule as separable pieces (SPEC §3 "Training", §3.1 "Ours").

Centralised: grads = d(loss * scale)/dw -> unscale -> global squared norm + overflow flag ->
apply (clip to global norm 1.0, AdamWeightDecay step unless overflow, loss-scale update).

Split learning needs ONE global norm and ONE overflow decision across parties, so the steps are
separate: every party calls `unscale_grads`, `grads_sq_norm`, `grads_overflow` on its own grads,
the parties exchange the scalars, and each party calls `PanguOptimizer.apply(grads,
global_norm, overflow)` with the shared values. Loss-scale state (value and clean-step counter)
lives in Parameters, so it is saved in checkpoints with the Adam moments.
"""
from __future__ import annotations

import logging
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
import mindspore as ms
from mindspore import nn, ops, Parameter, Tensor, ParameterTuple
from mindspore.common import dtype as mstype

from .lr_schedule import LearningRate

logger = logging.getLogger(__name__)

__all__ = [
    "NO_DECAY_KEYS", "decay_filter", "weight_decay_groups", "unscale_grads", "grads_sq_norm",
    "grads_overflow", "clip_grads", "DynamicLossScale", "PanguOptimizer", "PanguTrainOneStepCell",
]

NO_DECAY_KEYS = ("layernorm", "bias")

_hyper_map = ops.HyperMap()
_sq_sum = ops.MultitypeFuncGraph("sq_sum")
_scale = ops.MultitypeFuncGraph("scale")


@_sq_sum.register("Tensor")
def _sq_sum_tensor(g: Tensor) -> Tensor:
    g = ops.cast(g, mstype.float32)
    return ops.reduce_sum(g * g)


@_scale.register("Tensor", "Tensor")
def _scale_tensor(factor: Tensor, g: Tensor) -> Tensor:
    return g * ops.cast(factor, g.dtype)


def decay_filter(name: str) -> bool:
    """True if parameter `name` gets weight decay (all but LayerNorm params and biases)."""
    low = name.lower()
    return not any(k in low for k in NO_DECAY_KEYS)


def weight_decay_groups(params: Iterable[Parameter], weight_decay: float = 0.1) -> List[dict]:
    """Two optimizer groups: decayed weights and non-decayed LayerNorm/bias params; order kept."""
    params = list(params)
    decay = [p for p in params if decay_filter(p.name)]
    no_decay = [p for p in params if not decay_filter(p.name)]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": float(weight_decay)})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    groups.append({"order_params": params})
    return groups


def unscale_grads(grads: Tuple[Tensor, ...], loss_scale: Tensor) -> Tuple[Tensor, ...]:
    """grads of (loss * scale) -> grads of loss."""
    return _hyper_map(ops.partial(_scale, 1.0 / ops.cast(loss_scale, mstype.float32)), grads)


def grads_sq_norm(grads: Tuple[Tensor, ...]) -> Tensor:
    """Sum of squares of all gradient entries (fp32 scalar); parties add theirs to get the global one."""
    return ops.addn(_hyper_map(_sq_sum, grads))


def grads_overflow(grads: Tuple[Tensor, ...]) -> Tensor:
    """Bool scalar: True if any gradient entry is inf or nan."""
    return ops.logical_not(ms.amp.all_finite(grads))


def local_grad_stats(grads: Tuple[Tensor, ...], loss_scale: Tensor) -> Tuple[Tuple[Tensor, ...], Tensor, Tensor]:
    """One party's share of a step: (unscaled grads, squared norm, overflow flag)."""
    unscaled = unscale_grads(grads, loss_scale)
    return unscaled, grads_sq_norm(unscaled), grads_overflow(unscaled)


def clip_grads(grads: Tuple[Tensor, ...], global_norm: Tensor, clip_norm: float = 1.0) -> Tuple[Tensor, ...]:
    """Scale grads by clip_norm / max(global_norm, clip_norm) (no-op when the norm is small)."""
    norm = ops.cast(global_norm, mstype.float32)
    factor = clip_norm / ops.maximum(norm, clip_norm)
    return _hyper_map(ops.partial(_scale, factor), grads)


class DynamicLossScale(nn.Cell):
    """Loss scale x2 after `scale_window` clean steps; /2 (not below `min_scale`) on overflow.

    State is two Parameters (`loss_scale`, `loss_scale_clean_steps`), checkpointed with the model.
    """

    def __init__(self, init_scale: float = 2.0 ** 32, scale_factor: float = 2.0, scale_window: int = 1000,
                 min_scale: float = 1.0) -> None:
        super().__init__(auto_prefix=False)
        if init_scale <= 0 or scale_factor <= 1 or scale_window < 1:
            raise ValueError(f"bad loss-scale settings: init_scale={init_scale}, factor={scale_factor}, "
                             f"window={scale_window}")
        self.loss_scale = Parameter(Tensor(np.array(init_scale, np.float32)), name="loss_scale",
                                    requires_grad=False)
        self.clean_steps = Parameter(Tensor(np.array(0, np.int32)), name="loss_scale_clean_steps",
                                     requires_grad=False)
        self.scale_factor = float(scale_factor)
        self.scale_window = int(scale_window)
        self.min_scale = float(min_scale)

    def construct(self, overflow: Tensor) -> Tensor:
        """Update with this step's (shared) overflow decision; returns the new scale."""
        scale = self.loss_scale
        counter = self.clean_steps + 1
        grow = counter >= self.scale_window
        shrunk = ops.maximum(scale / self.scale_factor, self.min_scale)
        grown = ops.select(grow, scale * self.scale_factor, scale)
        new_scale = ops.select(overflow, shrunk, grown)
        zero = ops.zeros_like(counter)
        new_counter = ops.select(overflow, zero, ops.select(grow, zero, counter))
        new_scale = ops.depend(new_scale, ops.assign(self.clean_steps, new_counter))
        ops.assign(self.loss_scale, new_scale)
        return new_scale


class PanguOptimizer(nn.Cell):
    """FP32-state AdamWeightDecay (beta 0.9/0.95, eps 1e-8) on wd groups, warmup+cosine LR,
    dynamic loss scale, global-norm clip. `construct(grads, global_norm, overflow)` = apply.

    `params` are the trainable parameters of this party (or of the whole model); `grads` passed in
    must be UNSCALED and in the same order.
    """

    def __init__(self, params: Sequence[Parameter], start_lr: float = 1e-4, end_lr: float = 1e-6,
                 warmup_steps: int = 2000, decay_steps: int = 200000, weight_decay: float = 0.1,
                 beta1: float = 0.9, beta2: float = 0.95, eps: float = 1e-8, loss_scale: float = 2.0 ** 32,
                 loss_scale_window: int = 1000, clip_norm: float = 1.0) -> None:
        super().__init__(auto_prefix=False)
        params = list(params)
        if not params:
            raise ValueError("PanguOptimizer needs at least one parameter")
        for p in params:
            if p.dtype != mstype.float32:
                raise TypeError(f"parameter {p.name} is {p.dtype}; the recipe keeps params and Adam states fp32")
        self.parameters = ParameterTuple(params)
        self.learning_rate = LearningRate(start_lr, end_lr, warmup_steps, decay_steps)
        self.optimizer = nn.AdamWeightDecay(weight_decay_groups(params, weight_decay),
                                            learning_rate=self.learning_rate, beta1=beta1, beta2=beta2, eps=eps)
        self.loss_scaler = DynamicLossScale(loss_scale, 2.0, loss_scale_window)
        self.clip_norm = float(clip_norm)

    @property
    def global_step(self) -> Parameter:
        """Applied updates so far (drives the LR schedule)."""
        return self.optimizer.global_step

    def get_loss_scale(self) -> Parameter:
        return self.loss_scaler.loss_scale

    def current_lr(self) -> float:
        return float(self.learning_rate(self.optimizer.global_step).asnumpy())

    def construct(self, grads: Tuple[Tensor, ...], global_norm: Tensor, overflow: Tensor) -> Tensor:
        """Clip with the shared global norm, step Adam unless overflow, update the loss scale.

        Returns `overflow` (True = update skipped).
        """
        if not overflow:
            clipped = clip_grads(grads, global_norm, self.clip_norm)
            self.optimizer(clipped)
        self.loss_scaler(overflow)
        return overflow

    def apply(self, grads: Tuple[Tensor, ...], global_norm: Tensor, overflow: Tensor) -> Tensor:
        """Alias of calling the cell (readability at call sites of the split example)."""
        return self(grads, global_norm, overflow)


def _norm_group_indices(params: Sequence[Parameter], groups: Optional[Sequence[Sequence[str]]]
                        ) -> Tuple[Tuple[int, ...], ...]:
    """Parameter names per group -> positions in `params`; every parameter in exactly one group."""
    if not groups:
        return ()
    position = {p.name: i for i, p in enumerate(params)}
    names = [name for group in groups for name in group]
    if sorted(names) != sorted(position):
        missing = sorted(set(position) - set(names))
        extra = sorted({name for name in names if name not in position or names.count(name) > 1})
        raise ValueError(f"norm_groups must name every trainable parameter exactly once; missing: {missing[:5]}, "
                         f"unknown or repeated: {extra[:5]}")
    return tuple(tuple(position[name] for name in group) for group in groups if group)


class PanguTrainOneStepCell(nn.Cell):
    """Centralised step: loss, scaled grads, unscale, global norm/overflow, apply.

    Returns (loss, overflow, loss_scale_used). Works in PyNative and Graph mode. `norm_groups`
    (parameter names per group) sums the squared gradient norm group by group in that order, in
    float32: given the split parties' groups in the order the split's decision adds them, the
    centralised global norm is rounded exactly like the split's, so the two runs stay bit-identical
    instead of drifting apart from a one-ulp difference in the clip factor (chaotically, over
    hundreds of steps at a large learning rate).
    """

    def __init__(self, network: nn.Cell, optimizer: PanguOptimizer,
                 norm_groups: Optional[Sequence[Sequence[str]]] = None) -> None:
        super().__init__(auto_prefix=False)
        self.network = network
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad = ops.GradOperation(get_by_list=True, sens_param=True)
        self.norm_groups = _norm_group_indices(self.weights, norm_groups)

    def construct(self, input_ids: Tensor, position_id: Tensor, attention_mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        scale = ops.cast(self.optimizer.get_loss_scale(), mstype.float32) * 1.0
        loss = self.network(input_ids, position_id, attention_mask)
        sens = ops.fill(loss.dtype, loss.shape, 1.0) * scale
        grads = self.grad(self.network, self.weights)(input_ids, position_id, attention_mask, sens)
        grads = unscale_grads(grads, scale)
        overflow = grads_overflow(grads)
        if self.norm_groups:
            sq_norm = grads_sq_norm(tuple(grads[i] for i in self.norm_groups[0]))
            for group in self.norm_groups[1:]:
                sq_norm = sq_norm + grads_sq_norm(tuple(grads[i] for i in group))
        else:
            sq_norm = grads_sq_norm(grads)
        overflow = self.optimizer(grads, ops.sqrt(sq_norm), overflow)
        return loss, overflow, scale
