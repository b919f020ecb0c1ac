"""Label differential privacy by randomized response (SPEC §2.6).

The party holding the labels randomises them before they reach the loss, so nothing computed from
them (gradients sent back to the other party included) can reveal a true label with more than
e^eps odds. Each label is kept with probability e^eps / (e^eps + C - 1), otherwise replaced by one
of the C - 1 other classes chosen uniformly; eps = 0 makes the output uniform over all C classes.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from mindspore_federated.privacy._common import SeedLike, check_eps, from_numpy, make_rng, to_numpy

logger = logging.getLogger(__name__)


class LabelDP:
    """Randomized response on binary ([N] or [N, 1] of 0/1) or one-hot ([N, C], C >= 2) labels.

    Calling it on a mindspore Tensor returns a Tensor, on a numpy array a numpy array, with the
    input's dtype and shape. ``seed`` (int, SeedSequence or numpy Generator) makes it reproducible.
    """

    def __init__(self, eps: float, seed: SeedLike = None) -> None:
        self.eps = check_eps(eps, "LabelDP")
        self._rng = make_rng(seed)
        logger.info("LabelDP enabled with eps=%s", self.eps)

    def keep_probability(self, num_classes: int) -> float:
        """e^eps / (e^eps + C - 1), written so that a large eps cannot overflow."""
        return 1.0 / (1.0 + (num_classes - 1) * math.exp(-self.eps))

    def __call__(self, labels):
        array, ms_dtype = to_numpy(labels, "LabelDP")
        classes, num_classes, one_hot = _class_indices(array)
        keep = self.keep_probability(num_classes)
        flip = self._rng.random(classes.size) >= keep
        shift = self._rng.integers(1, num_classes, classes.size)  # uniform over the other classes
        noisy = np.where(flip, (classes + shift) % num_classes, classes)
        if one_hot:
            out = np.eye(num_classes, dtype=array.dtype)[noisy]
        else:
            out = noisy.astype(array.dtype).reshape(array.shape)
        return from_numpy(out, ms_dtype)

    def __repr__(self) -> str:
        return f"LabelDP(eps={self.eps})"


def _class_indices(array: np.ndarray) -> tuple:
    """(class index per sample, number of classes, one-hot?) after checking the label format."""
    shape = tuple(array.shape)
    if array.dtype.kind not in "biuf" and array.dtype.name != "bfloat16":
        raise TypeError(f"LabelDP: labels must be numeric or bool, got dtype {array.dtype}")
    values = array.astype(np.float64) if array.dtype.kind != "b" else array.astype(np.uint8)
    if array.ndim == 1 or (array.ndim == 2 and shape[1] == 1):
        bad = (values != 0) & (values != 1)
        if bad.any():
            sample = values.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]]
            raise ValueError(f"LabelDP: binary labels of shape {shape} must be 0/1, found {sample}")
        return values.reshape(-1).astype(np.int64), 2, False
    if array.ndim == 2 and shape[1] >= 2:
        binary = np.all((values == 0) | (values == 1), axis=1)
        rows_ok = binary & (values.sum(axis=1) == 1)
        if not rows_ok.all():
            row = int(np.flatnonzero(~rows_ok)[0])
            raise ValueError(f"LabelDP: labels of shape {shape} must be one-hot (one 1 per row, "
                             f"zeros elsewhere); row {row} is {values[row].tolist()}")
        return np.argmax(values, axis=1).astype(np.int64), shape[1], True
    raise ValueError(f"LabelDP: labels must have shape [N], [N, 1] (binary) or [N, C] "
                     f"(one-hot, C >= 2), got {list(shape)}")
