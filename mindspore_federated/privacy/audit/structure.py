"""Structure attack: group the activation vectors a party receives into "same token" classes.

What the receiver exploits (no weights, no data needed):

* positions: with EOD-reset attention masks the mask alone gives every vector's position id;
* at the embedding split each vector is ``W[token] + P[position]``: identical tokens at one
  position give identical vectors, and ``P[p] - P[0]`` is shared by every token, so once that offset
  is known (it is the densest difference between vectors at p and at 0) all positions collapse into
  one frame where equal tokens coincide;
* weights move little per step, so a token's vector in step s+1 lies next to its vector in step s:
  classes are tracked across the whole run.

Later split points or noise (compression, dropout, EmbeddingDP) blur this: the same procedure runs
with a tolerance (``radius``), and a second position model removes each position's mean vector
instead of solving exact offsets, which tolerates context-dependent vectors. 1-bit codes
(EmbeddingDP) only admit the second model; their classes keep a running mean, which averages the
randomized-response noise away as occurrences accumulate.
"""
from __future__ import annotations

import logging
from typing import List, Optional, Tuple

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["positions_from_mask", "typical_distance", "link_activations", "is_binary", "POSITION_MODELS"]


def positions_from_mask(mask: np.ndarray) -> np.ndarray:
    """[..., S, S] attention mask (non-zero = may attend) -> [..., S] position ids.

    Row i may attend to the columns of its own document up to itself, so its position is i minus
    the first column it may attend to (positions restart at 0 after each EOD reset).
    """
    allowed = np.asarray(mask) > 0
    if allowed.ndim < 2 or allowed.shape[-1] != allowed.shape[-2]:
        raise ValueError(f"positions_from_mask: expected [..., S, S], got shape {allowed.shape}")
    first = np.argmax(allowed, axis=-1)
    return np.arange(allowed.shape[-1]) - first


def is_binary(acts: np.ndarray) -> bool:
    """True for 0/1 codes (EmbeddingDP output)."""
    values = np.unique(np.asarray(acts)[: min(len(acts), 4)])
    return values.size <= 2 and set(values.tolist()) <= {0.0, 1.0}


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d2, 0.0)


def typical_distance(vectors: np.ndarray, sample: int = 512, seed: int = 0) -> float:
    """Median distance between two different received vectors: the scale `radius` is relative to."""
    vectors = np.asarray(vectors, np.float64).reshape(-1, np.shape(vectors)[-1])
    rng = np.random.default_rng(seed)
    pick = vectors[rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False)]
    d = np.sqrt(_sq_dist(pick, pick))
    d = d[np.triu_indices(len(pick), 1)]
    d = d[d > 1e-9]
    if d.size == 0:
        raise ValueError("typical_distance: all received vectors are identical")
    return float(np.median(d))


def _unique_rows(rows: np.ndarray, radius: float) -> np.ndarray:
    """Rows with near-duplicates (same token at the same position) removed."""
    keep: List[int] = []
    for i in range(len(rows)):
        if not keep or np.min(np.sum((rows[keep] - rows[i]) ** 2, axis=1)) > radius * radius:
            keep.append(i)
    return rows[keep]


def _mode_offset(vectors: np.ndarray, anchors: np.ndarray, radius: float, min_support: int = 2
                 ) -> Optional[np.ndarray]:
    """The offset d that makes the most of ``vectors - d`` land on ``anchors`` (at least
    `min_support` distinct pairs agree), or None."""
    if len(vectors) == 0 or len(anchors) == 0:
        return None
    vectors = _unique_rows(vectors, radius)
    cands = (vectors[:, None, :] - anchors[None, :, :]).reshape(-1, vectors.shape[1])
    if len(cands) > 1500:                     # bound the pairwise step (keeps every vector's pairs)
        anchors = anchors[: max(1, 1500 // len(vectors))]
        cands = (vectors[:, None, :] - anchors[None, :, :]).reshape(-1, vectors.shape[1])
    close = _sq_dist(cands, cands) <= radius * radius
    # support = number of different source vectors that agree on the offset
    source = np.repeat(np.arange(len(vectors)), len(anchors))
    support = np.array([np.unique(source[row]).size for row in close]) if len(vectors) > 1 else close.sum(1)
    best = int(np.argmax(support))
    if support[best] < min_support:
        return None
    return cands[close[best]].mean(0)


class _Classes:
    """The attacker's token classes: one centroid per class, in the position-0 frame."""

    def __init__(self, dim: int, follow: Optional[float]) -> None:
        self._centroids = np.zeros((64, dim))
        self._counts = np.zeros(64, np.int64)
        self.size = 0
        self.follow = follow          # weight of the newest member (None: plain running mean)

    def __len__(self) -> int:
        return self.size

    @property
    def centroids(self) -> np.ndarray:
        return self._centroids[: self.size]

    @property
    def counts(self) -> np.ndarray:
        return self._counts[: self.size]

    def nearest(self, z: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if self.size == 0:
            return np.full(len(z), -1), np.full(len(z), np.inf)
        d2 = _sq_dist(z, self.centroids)
        idx = np.argmin(d2, axis=1)
        return idx, np.sqrt(d2[np.arange(len(z)), idx])

    def _new(self, row: np.ndarray) -> int:
        if self.size == len(self._counts):
            self._centroids = np.vstack([self._centroids, np.zeros_like(self._centroids)])
            self._counts = np.concatenate([self._counts, np.zeros_like(self._counts)])
        self._centroids[self.size] = row
        self._counts[self.size] = 1
        self.size += 1
        return self.size - 1

    def _add(self, c: int, row: np.ndarray) -> None:
        self._counts[c] += 1
        weight = 1.0 / self._counts[c] if self.follow is None else max(self.follow, 1.0 / self._counts[c])
        self._centroids[c] += weight * (row - self._centroids[c])

    def assign(self, z: np.ndarray, radius: float) -> np.ndarray:
        """Label each row with its class (a new one when none lies within radius); update centroids."""
        labels = np.full(len(z), -1, np.int64)
        idx, dist = self.nearest(z)
        for i in np.flatnonzero(dist <= radius):
            labels[i] = idx[i]
            self._add(int(idx[i]), z[i])
        for i in np.flatnonzero(labels < 0):       # new classes; later rows may join them
            near, d = self.nearest(z[i:i + 1])
            if d[0] <= radius:
                labels[i] = near[0]
                self._add(int(near[0]), z[i])
            else:
                labels[i] = self._new(z[i])
        return labels


def _bootstrap_offsets(acts: np.ndarray, pos: np.ndarray, radius: float, steps: int) -> dict:
    """Position offsets P[p] - P[0] from the first `steps` steps pooled (weights barely move yet)."""
    vecs = acts[:steps].reshape(-1, acts.shape[-1])
    where = pos[:steps].reshape(-1)
    offsets = {0: np.zeros(acts.shape[-1])}
    frame = _unique_rows(vecs[where == 0], radius)
    pending = sorted(set(where.tolist()) - {0}, key=lambda p: -np.sum(where == p))
    progress = True
    while pending and progress:
        progress = False
        for p in list(pending):
            found = _mode_offset(vecs[where == p], frame, radius)
            if found is not None:
                offsets[p] = found
                frame = np.vstack([frame, _unique_rows(vecs[where == p] - found, radius)])
                pending.remove(p)
                progress = True
    return offsets


POSITION_MODELS = ("offset", "center")


def _centre_by_position(vectors: np.ndarray, positions: np.ndarray) -> np.ndarray:
    centred = np.empty_like(vectors)
    for p in np.unique(positions):
        at = positions == p
        centred[at] = vectors[at] - vectors[at].mean(0)
    return centred


def link_activations(acts: np.ndarray, positions: np.ndarray, radius: float, position_model: str = "offset",
                     bootstrap_steps: int = 4, binary: Optional[bool] = None) -> np.ndarray:
    """Group received vectors into token classes, across positions and steps.

    Args:
        acts: [steps, n, H] what the party received, step by step (n vectors per step).
        positions: [steps, n] their position ids (`positions_from_mask`).
        radius: how far two vectors of one token may lie apart (after position correction), in
            the units of `acts` (see `typical_distance`).
        position_model: "offset" -- vectors are token + position terms, the offsets between
            positions are solved exactly (the embedding split); "center" -- each position's mean
            vector is removed, which tolerates context-dependent vectors (later split points) and
            is the only model for 1-bit codes.
        bootstrap_steps: steps pooled to find the first position offsets ("offset").
        binary: treat rows as 0/1 codes (default: detected); they are read as +-1.

    Returns:
        [steps, n] class labels (integers; equal = the attacker believes: same token).
    """
    acts = np.asarray(acts, np.float64)
    positions = np.asarray(positions)
    if acts.ndim != 3 or positions.shape != acts.shape[:2]:
        raise ValueError(f"link_activations: acts must be [steps, n, H] and positions [steps, n]; got "
                         f"{acts.shape} and {positions.shape}")
    if radius <= 0:
        raise ValueError(f"link_activations: radius must be > 0, got {radius}")
    if position_model not in POSITION_MODELS:
        raise ValueError(f"link_activations: position_model must be one of {POSITION_MODELS}, got {position_model!r}")
    binary = is_binary(acts) if binary is None else binary
    steps, n, dim = acts.shape
    labels = np.empty((steps, n), np.int64)
    if binary or position_model == "center":
        centred = _centre_by_position(2.0 * acts - 1.0 if binary else acts, positions)
        # 1-bit codes: average the randomized-response noise; floats: half-follow the training drift
        classes = _Classes(dim, follow=None if binary else 0.5)
        for s in range(steps):
            labels[s] = classes.assign(centred[s], radius)
        return labels

    classes = _Classes(dim, follow=1.0)           # follow the weights as they train
    offsets = _bootstrap_offsets(acts, positions, radius, bootstrap_steps)
    unresolved = 0
    for s in range(steps):
        vecs, where = acts[s], positions[s]
        order = sorted(np.unique(where).tolist(), key=lambda p: (p not in offsets, p))
        for p in order:
            idx = np.flatnonzero(where == p)
            # an unplaced position is searched for again every few steps (the search is the costly part)
            if p not in offsets and len(classes) and s % 8 == 0:
                top = classes.centroids[np.argsort(-classes.counts, kind="stable")[:400]]
                found = _mode_offset(vecs[idx], top, radius)
                if found is not None:
                    offsets[p] = found
            if p not in offsets:                   # cannot place these yet: singletons
                labels[s, idx] = -1
                unresolved += len(idx)
                continue
            if p != 0 and len(classes):            # follow the offset as the weights train
                near, dist = classes.nearest(vecs[idx] - offsets[p])
                ok = dist <= radius
                if ok.any():
                    offsets[p] = offsets[p] + np.median(vecs[idx][ok] - offsets[p] - classes.centroids[near[ok]], 0)
            labels[s, idx] = classes.assign(vecs[idx] - offsets[p], radius)
    if unresolved:
        lost = labels < 0
        labels[lost] = labels.max() + 1 + np.arange(int(lost.sum()))
        logger.info("structure attack: %d of %d vectors at positions whose offset was never found", unresolved,
                    labels.size)
    return labels
