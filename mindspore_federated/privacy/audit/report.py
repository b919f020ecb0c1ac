"""One call that runs every attack on a recording and scores it against the true tokens."""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from mindspore_federated.privacy.audit.metrics import (adjusted_rand_index, chance_recovery, purity,
                                                       token_recovery)
from mindspore_federated.privacy.audit.naming import (ReferenceModel, apply_names, name_by_frequency,
                                                      refine_with_bigrams)
from mindspore_federated.privacy.audit.structure import (is_binary, link_activations, positions_from_mask,
                                                         typical_distance)

logger = logging.getLogger(__name__)

__all__ = ["audit_received", "ATTACK_GRID"]

# (position model, tolerance relative to the typical distance between two received vectors) tried by
# the structure attack; the reported result is the best one for the attacker (chosen with the true
# tokens, so an upper envelope of this attack family rather than what a blind attacker would pick).
# 1-bit codes of one token at two positions differ in about a third of their bits: wider tolerances.
ATTACK_GRID = {"float": (("offset", 0.15), ("offset", 0.3), ("center", 0.3), ("center", 0.5), ("center", 0.7)),
               "binary": (("center", 0.4), ("center", 0.5), ("center", 0.6), ("center", 0.7))}


def _recovery(truth: np.ndarray, guess: np.ndarray, top: int) -> Dict[str, float]:
    return {"all": token_recovery(truth, guess), f"top{top}": token_recovery(truth, guess, top=top)}


# weights of the frequency-rank penalty tried by the bigram refinement (best one reported, as for radii)
FREQ_WEIGHTS = (2.0, 5.0)


def _name(labels: np.ndarray, truth: np.ndarray, ref: ReferenceModel, top: int) -> Dict[str, Dict[str, float]]:
    unigram = name_by_frequency(labels, ref)
    bigram = [_recovery(truth, apply_names(labels, refine_with_bigrams(labels, unigram, ref, freq_weight=w)), top)
              for w in FREQ_WEIGHTS]
    return {"frequency": _recovery(truth, apply_names(labels, unigram), top),
            "bigram": max(bigram, key=lambda r: r["all"])}


def audit_received(activations: np.ndarray, masks: np.ndarray, truth: np.ndarray,
                   references: Mapping[str, ReferenceModel],
                   grid: Optional[Sequence[Tuple[str, float]]] = None, top: int = 100) -> Dict[str, Any]:
    """Attack what a party received and score it.

    Args:
        activations: [steps, B, S, H] the tensors received in training, in order.
        masks: [steps, B, S, S] the attention masks received with them (positions come from these).
        truth: [steps, B, S] the tokens behind them (known to the auditor, not to the attacker).
        references: name -> public text model the attacker names classes with.
        grid: (position model, radius factor) pairs the structure attack tries (default
            `ATTACK_GRID` for float or 1-bit activations).

    Returns a dict: tokens, chance {all, topN}, binary, `attacks` {"model x factor": {ari, purity,
    classes, naming {reference: {frequency|bigram: {all, topN}}}}}, `best` (the attack with the
    highest recovery), and `true_partition` (naming given a perfect grouping: what naming alone
    limits).
    """
    acts = np.asarray(activations)
    truth = np.asarray(truth)
    if acts.ndim != 4 or truth.shape != acts.shape[:3]:
        raise ValueError(f"audit_received: activations must be [steps, B, S, H] and truth [steps, B, S]; got "
                         f"{acts.shape} and {truth.shape}")
    steps, batch, seq, dim = acts.shape
    positions = positions_from_mask(masks).reshape(steps, batch * seq)
    flat = acts.reshape(steps, batch * seq, dim)
    rows_truth = truth.reshape(steps * batch, seq)
    binary = is_binary(flat)
    scale = typical_distance(flat[0] if not binary else 2.0 * flat[0] - 1.0)
    report: Dict[str, Any] = {"tokens": int(truth.size), "binary": binary, "steps": steps,
                              "chance": {"all": chance_recovery(truth), f"top{top}": chance_recovery(truth, top)},
                              "attacks": {}}
    for model, factor in grid or ATTACK_GRID["binary" if binary else "float"]:
        labels = link_activations(flat, positions, radius=factor * scale, position_model=model, binary=binary)
        rows = labels.reshape(steps * batch, seq)
        entry = {"ari": adjusted_rand_index(truth, labels), "purity": purity(truth, labels),
                 "classes": int(np.unique(labels).size),
                 "naming": {name: _name(rows, rows_truth, ref, top) for name, ref in references.items()}}
        report["attacks"][f"{model} x {factor}"] = entry
        logger.info("audit: %s positions, radius %.2f x %.3g: %d classes, ARI %.3f, purity %.3f", model, factor,
                    scale, entry["classes"], entry["ari"], entry["purity"])
    report["best"] = max(report["attacks"], key=lambda f: max(
        v["all"] for ref in report["attacks"][f]["naming"].values() for v in ref.values()))
    report["true_partition"] = {name: _name(rows_truth, rows_truth, ref, top) for name, ref in references.items()}
    report["true_classes"] = int(np.unique(truth).size)
    return report
