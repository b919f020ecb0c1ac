"""Helpers shared by the DP mechanisms: eps validation, RNGs, Tensor <-> numpy round trips."""
from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple, Union

import numpy as np

SeedLike = Union[None, int, np.random.Generator, np.random.SeedSequence]


def check_eps(eps, who: str, allow_none: bool = False) -> Optional[float]:
    """eps as a float >= 0 (inf allowed: no noise); ValueError/TypeError with context otherwise."""
    if eps is None and allow_none:
        return None
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"{who}: eps must be a real number >= 0"
                        f"{' or None' if allow_none else ''}, got {type(eps).__name__}")
    eps = float(eps)
    if math.isnan(eps) or eps < 0:
        raise ValueError(f"{who}: eps must be >= 0, got {eps}")
    return eps


def make_rng(seed: SeedLike) -> np.random.Generator:
    """One generator per mechanism: a fixed seed makes a whole run reproducible."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def to_numpy(value, who: str) -> Tuple[np.ndarray, Optional[object]]:
    """(numpy array, mindspore dtype or None when the input already was numpy)."""
    if isinstance(value, np.ndarray):
        return value, None
    import mindspore as ms  # only callers holding Tensors pay for it
    if isinstance(value, ms.Tensor):
        return value.asnumpy(), value.dtype
    raise TypeError(f"{who}: expected a mindspore.Tensor or numpy.ndarray, got {type(value).__name__}")


def from_numpy(array: np.ndarray, ms_dtype) -> object:
    """Back to the caller's type: numpy stays numpy, a Tensor input gets a Tensor of its dtype."""
    if ms_dtype is None:
        return array
    import mindspore as ms
    return ms.Tensor(array, dtype=ms_dtype)
