"""Embedding differential privacy: randomised 1-bit activations (SPEC §2.6).

The activations a party sends can be inverted back to its inputs. EmbeddingDP keeps one bit per
value (x > 0) and, with eps, flips each bit with probability q = 1 / (e^(eps/2) + 1): a 1 stays a
1 with probability 1 - q and a 0 becomes a 1 with probability q. Without eps it is the
deterministic 1-bit quantisation.

The result is not differentiable; a trainer applying it on the wire must pass the gradient
received for the randomised activations straight through to the original ones.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Optional

import numpy as np

from mindspore_federated.privacy._common import SeedLike, check_eps, from_numpy, make_rng, to_numpy

logger = logging.getLogger(__name__)

_FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")


class EmbeddingDP:
    """1-bit quantisation of float activations, randomised when ``eps`` is given.

    Same type (Tensor or numpy), dtype and shape as the input; values are 0 or 1.
    """

    def __init__(self, eps: Optional[float] = None, seed: SeedLike = None) -> None:
        self.eps = check_eps(eps, "EmbeddingDP", allow_none=True)
        self._rng = make_rng(seed)
        logger.info("EmbeddingDP enabled with eps=%s", self.eps)

    @property
    def flip_probability(self) -> float:
        """q = 1 / (e^(eps/2) + 1), 0 without eps; written so that a large eps cannot overflow."""
        if self.eps is None:
            return 0.0
        damp = math.exp(-self.eps / 2)
        return damp / (1.0 + damp)

    def __call__(self, activations):
        array, ms_dtype = to_numpy(activations, "EmbeddingDP")
        if array.dtype.name not in _FLOAT_NAMES:
            raise TypeError(f"EmbeddingDP: activations must be float ({', '.join(_FLOAT_NAMES)}), "
                            f"got {array.dtype.name}")
        bits = array > 0
        q = self.flip_probability
        if q > 0 and bits.size:
            bits ^= self._rng.random(bits.shape, dtype=np.float32) < np.float32(q)
        return from_numpy(bits.astype(array.dtype), ms_dtype)

    def __repr__(self) -> str:
        return f"EmbeddingDP(eps={self.eps})"


def check_compatible(tensor_name: str, embedding_dp_enabled: bool, compress_config) -> None:
    """Refuse EmbeddingDP and min_max compression on the same tensor.

    EmbeddingDP already reduces the tensor to 0/1 values; min_max would re-quantise its randomised
    bits. ``bit_pack`` with ``bit_num: 1`` sends the same values losslessly at 1 bit each.
    ``compress_config`` may be a CompressConfig, a {compress_type, bit_num} mapping, or None.
    """
    if not embedding_dp_enabled or compress_config is None:
        return
    if isinstance(compress_config, Mapping):
        kind = compress_config.get("compress_type")
    else:
        kind = getattr(compress_config, "compress_type", compress_config)
    if kind == "min_max":
        raise ValueError(
            f"tensor '{tensor_name}': EmbeddingDP and min_max compression cannot both apply: "
            f"EmbeddingDP already sends 0/1 values, so declare compress_type: bit_pack with "
            f"bit_num: 1 (lossless, 1 bit per value) or no compression for this tensor")
