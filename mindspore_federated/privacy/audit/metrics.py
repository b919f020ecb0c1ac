"""How well an attacker's grouping and naming match the true tokens (the auditor knows them)."""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["adjusted_rand_index", "purity", "token_recovery", "chance_recovery"]


def _flat(labels: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(labels).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name}: no labels")
    return array


def _contingency(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Non-zero cells of the truth x prediction contingency table (a flat array of counts)."""
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    _, counts = np.unique(t.astype(np.int64) * (int(p.max()) + 1) + p, return_counts=True)
    return counts


def _pairs(counts: np.ndarray) -> float:
    counts = counts.astype(np.float64)
    return float(np.sum(counts * (counts - 1) / 2))


def adjusted_rand_index(truth: np.ndarray, pred: np.ndarray) -> float:
    """Adjusted Rand index of two partitions (1 = identical, ~0 = chance agreement)."""
    truth, pred = _flat(truth, "truth"), _flat(pred, "pred")
    if truth.shape != pred.shape:
        raise ValueError(f"adjusted_rand_index: {truth.size} true labels but {pred.size} predicted")
    n = truth.size
    index = _pairs(_contingency(truth, pred))
    a = _pairs(np.unique(truth, return_counts=True)[1])
    b = _pairs(np.unique(pred, return_counts=True)[1])
    total = n * (n - 1) / 2
    expected = a * b / total if total else 0.0
    maximum = (a + b) / 2
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))


def purity(truth: np.ndarray, pred: np.ndarray) -> float:
    """Share of items whose predicted cluster's majority token is their own token."""
    truth, pred = _flat(truth, "truth"), _flat(pred, "pred")
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    key = p.astype(np.int64) * (int(t.max()) + 1) + t
    cells, counts = np.unique(key, return_counts=True)
    best = np.zeros(int(p.max()) + 1, np.int64)
    np.maximum.at(best, cells // (int(t.max()) + 1), counts)
    return float(best.sum() / truth.size)


def _top_mask(truth: np.ndarray, top: Optional[int]) -> np.ndarray:
    if top is None:
        return np.ones(truth.shape, bool)
    tokens, counts = np.unique(truth, return_counts=True)
    keep = tokens[np.argsort(-counts, kind="stable")[:top]]
    return np.isin(truth, keep)


def token_recovery(truth: np.ndarray, guess: np.ndarray, top: Optional[int] = None) -> float:
    """Share of token occurrences named correctly; with `top`, only the occurrences of the `top`
    most frequent true tokens count."""
    truth, guess = _flat(truth, "truth"), _flat(guess, "guess")
    mask = _top_mask(truth, top)
    return float(np.mean(truth[mask] == guess[mask]))


def chance_recovery(truth: np.ndarray, top: Optional[int] = None) -> float:
    """The chance level: always guessing the commonest token (what B gets with no attack at all)."""
    truth = _flat(truth, "truth")
    mask = _top_mask(truth, top)
    _, counts = np.unique(truth[mask], return_counts=True)
    return float(counts.max() / mask.sum())
