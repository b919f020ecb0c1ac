"""PanGu-alpha learning rate: linear warmup, then cosine decay from start_lr to end_lr (SPEC §3)."""
from __future__ import annotations

import math

import numpy as np
from mindspore import nn, ops, Tensor
from mindspore.common import dtype as mstype

__all__ = ["LearningRate", "lr_at", "default_warmup_steps"]


def default_warmup_steps(total_steps: int, preset_warmup: int = 2000) -> int:
    """The recipe's 2000 warmup steps, but at most a tenth of a short run (so it still decays)."""
    return int(max(1, min(preset_warmup, total_steps // 10 if total_steps else preset_warmup)))


def lr_at(step: int, start_lr: float, end_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """Python reference of `LearningRate` (0-based optimizer step)."""
    if warmup_steps > 0 and step < warmup_steps:
        return start_lr * (step + 1) / warmup_steps
    progress = min(max(step - warmup_steps, 0) / max(decay_steps, 1), 1.0)
    return end_lr + 0.5 * (start_lr - end_lr) * (1.0 + math.cos(math.pi * progress))


class LearningRate(nn.learning_rate_schedule.LearningRateSchedule):
    """lr(step) = start_lr*(step+1)/warmup while step < warmup, then
    end_lr + (start_lr - end_lr)*(1 + cos(pi * min(step - warmup, decay) / decay))/2.

    `step` is the optimizer's global step: it only advances on applied (non-overflow) updates, so a
    skipped step does not consume the schedule.
    """

    def __init__(self, start_lr: float, end_lr: float, warmup_steps: int, decay_steps: int) -> None:
        super().__init__()
        if start_lr < 0 or end_lr < 0:
            raise ValueError(f"learning rates must be >= 0, got start_lr={start_lr}, end_lr={end_lr}")
        if warmup_steps < 0 or decay_steps < 0:
            raise ValueError(f"warmup_steps/decay_steps must be >= 0, got {warmup_steps}/{decay_steps}")
        self.start_lr = float(start_lr)
        self.end_lr = float(end_lr)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = int(max(decay_steps, 1))
        self.warmup = Tensor(np.array(float(max(warmup_steps, 1)), np.float32))
        self.warmup_start = Tensor(np.array(float(warmup_steps), np.float32))
        self.decay = Tensor(np.array(float(self.decay_steps), np.float32))
        self.pi = math.pi

    def construct(self, global_step: Tensor) -> Tensor:
        step = ops.cast(ops.reshape(global_step, ()), mstype.float32)
        warm_lr = self.start_lr * (step + 1.0) / self.warmup
        progress = ops.clip_by_value((step - self.warmup_start) / self.decay, 0.0, 1.0)
        cos_lr = self.end_lr + 0.5 * (self.start_lr - self.end_lr) * (1.0 + ops.cos(self.pi * progress))
        return ops.select(step < self.warmup_start, warm_lr, cos_lr)
