"""Naming attack: turn the attacker's token classes into guessed tokens with public text.

Once the received vectors are grouped, the receiver holds a substitution cipher of the sender's
token stream: a class id per occurrence, in order. Any text in the same language, tokenized with
the public tokenizer, names the classes:

* `name_by_frequency`: the i-th most frequent class is the i-th most frequent reference token;
* `refine_with_bigrams`: iterated conditional modes on a bigram model of the reference text (each
  class in turn takes the token that best explains its left and right neighbours, kept close to
  its frequency rank) -- a simple decipherment that improves on frequency ranks.
"""
from __future__ import annotations

import logging
from typing import Dict, Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["ReferenceModel", "name_by_frequency", "refine_with_bigrams", "apply_names"]


class ReferenceModel:
    """Unigram and bigram statistics of public text the attacker holds (token id sequences).

    The bigram table is dense over the `top` most frequent reference tokens (add-`alpha` smoothed
    log-probabilities); rarer tokens are never proposed by the refinement.
    """

    def __init__(self, sequences: Sequence[np.ndarray], top: int = 2000, alpha: float = 0.1) -> None:
        seqs = [np.asarray(s, np.int64).reshape(-1) for s in sequences if len(s)]
        if not seqs:
            raise ValueError("ReferenceModel: the reference corpus is empty")
        tokens = np.concatenate(seqs)
        values, counts = np.unique(tokens, return_counts=True)
        order = np.argsort(-counts, kind="stable")
        self.ranked = values[order]                 # tokens, most frequent first
        self.freq = counts[order] / counts.sum()
        self.size = int(tokens.size)
        self.top = min(top, len(self.ranked))
        index = {int(t): i for i, t in enumerate(self.ranked[: self.top])}
        bigrams = np.zeros((self.top, self.top))
        for seq in seqs:
            a = np.array([index.get(int(t), -1) for t in seq[:-1]])
            b = np.array([index.get(int(t), -1) for t in seq[1:]])
            ok = (a >= 0) & (b >= 0)
            np.add.at(bigrams, (a[ok], b[ok]), 1.0)
        self.log_bigram = np.log((bigrams + alpha) / (bigrams.sum(1, keepdims=True) + alpha * self.top))
        self.log_freq = np.log(self.freq[: self.top])


def _class_counts(labels: np.ndarray):
    classes, inverse, counts = np.unique(np.asarray(labels).reshape(-1), return_inverse=True, return_counts=True)
    return classes, inverse, counts


def name_by_frequency(labels: np.ndarray, reference: ReferenceModel) -> Dict[int, int]:
    """class id -> token: frequency rank matched to frequency rank (classes beyond the reference's
    vocabulary get its commonest token)."""
    classes, _, counts = _class_counts(labels)
    order = np.argsort(-counts, kind="stable")
    names = {}
    for rank, c in enumerate(classes[order]):
        names[int(c)] = int(reference.ranked[rank] if rank < len(reference.ranked) else reference.ranked[0])
    return names


def apply_names(labels: np.ndarray, names: Dict[int, int], default: int = -1) -> np.ndarray:
    """The guessed token of every occurrence."""
    flat = np.asarray(labels).reshape(-1)
    return np.array([names.get(int(c), default) for c in flat]).reshape(np.shape(labels))


def refine_with_bigrams(labels: np.ndarray, names: Dict[int, int], reference: ReferenceModel,
                        sweeps: int = 6, classes_limit: int = 1500, freq_weight: float = 2.0) -> Dict[int, int]:
    """Improve a naming with the reference bigram model (iterated conditional modes).

    Args:
        labels: [rows, S] class ids in reading order (one row = one received sequence).
        names: starting naming (e.g. `name_by_frequency`).
        classes_limit: only the most frequent classes are renamed (the others keep their name).
        freq_weight: weight of the penalty |log f(class) - log f(token)| per occurrence, which keeps
            a class near its frequency rank.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"refine_with_bigrams: labels must be [rows, S], got shape {labels.shape}")
    classes, inverse, counts = _class_counts(labels)
    order = np.argsort(-counts, kind="stable")[: min(classes_limit, reference.top)]
    slot = np.full(len(classes), -1)
    slot[order] = np.arange(len(order))             # class index -> row of the cipher bigram table
    seq = slot[inverse].reshape(labels.shape)
    m = len(order)
    a, b = seq[:, :-1].reshape(-1), seq[:, 1:].reshape(-1)
    ok = (a >= 0) & (b >= 0)
    cipher = np.zeros((m, m))
    np.add.at(cipher, (a[ok], b[ok]), 1.0)
    token_row = {int(t): i for i, t in enumerate(reference.ranked[: reference.top])}
    current = np.array([token_row.get(names.get(int(classes[c]), -1), 0) for c in order])
    log_f_class = np.log(counts[order] / counts.sum())
    n_class = counts[order].astype(np.float64)
    left_nz = [np.flatnonzero(cipher[:, j]) for j in range(m)]
    right_nz = [np.flatnonzero(cipher[j]) for j in range(m)]
    for sweep in range(sweeps):
        changed = 0
        for j in range(m):
            score = -freq_weight * n_class[j] * np.abs(log_f_class[j] - reference.log_freq)
            left, right = left_nz[j], right_nz[j]
            if left.size:
                score += cipher[left, j] @ reference.log_bigram[current[left], :]
            if right.size:
                score += reference.log_bigram[:, current[right]] @ cipher[j, right]
            best = int(np.argmax(score))
            if best != current[j]:
                current[j] = best
                changed += 1
        logger.debug("bigram refinement sweep %d: %d of %d classes renamed", sweep + 1, changed, m)
        if not changed:
            break
    refined = dict(names)
    for row, c in enumerate(order):
        refined[int(classes[c])] = int(reference.ranked[current[row]])
    return refined
