"""Synthetic click data for the two parties, in the raw csv layout the data join reads.

Each sample has a string id (``oaid``) and Criteo's 39 fields; the leader holds 20 fields and the
label, the follower the other 19 (see wide_and_deep.py). Each party holds only part of the ids
(``--overlap`` of them both). The click probability depends on fields of BOTH parties (a
per-category effect for every field, plus a leader x follower interaction), so the joined model
beats what either party could learn alone.

    python generate_data.py [--output_dir data/raw] [--train_samples 16000] [--eval_samples 4000]

Writes <output_dir>/{leader,follower}/{train,eval}/part_0.csv and prints the AUC of the true
click probabilities (the best any model can reach on these labels).
"""
import argparse
import csv
import os

import numpy as np

from criteo_dataset import schema_columns
from wide_and_deep import FOLLOWER_FIELDS, LEADER_FIELDS, roc_auc

INTEGER_FIELDS = 13  # Criteo's I1..I13: a numeric value, bucketed into the field's ids


def _split(rng, count, overlap):
    """Which samples each party holds: ``overlap`` both, the rest split between them."""
    kind = rng.random(count)
    alone = (1 - overlap) / 2
    return kind >= alone, (kind < alone) | (kind >= 2 * alone)  # leader, follower


def generate(rng, count, vocab_per_field, effects, interaction):
    """Field categories, feature values and labels of ``count`` samples."""
    categories = rng.zipf(1.3, size=(count, 39)) % vocab_per_field
    values = np.ones((count, 39), np.float32)
    values[:, :INTEGER_FIELDS] = (categories[:, :INTEGER_FIELDS] + 1) / vocab_per_field
    logit = effects[np.arange(39), categories].sum(axis=1)
    logit += interaction[categories[:, LEADER_FIELDS[0]], categories[:, FOLLOWER_FIELDS[0]]]
    probability = 1 / (1 + np.exp(-(logit - 1.0)))
    labels = (rng.random(count) < probability).astype(np.float32)
    ids = categories + np.arange(39) * vocab_per_field  # one id range per field
    return ids, values, labels, probability


def write_party(path, role, oaids, ids, values, labels, rows):
    fields = LEADER_FIELDS if role == "leader" else FOLLOWER_FIELDS
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "part_0.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["oaid"] + schema_columns(role))
        for row in rows:
            line = [oaids[row]] + ids[row, fields].tolist() + [f"{v:.4g}" for v in values[row, fields]]
            writer.writerow(line + ([int(labels[row])] if role == "leader" else []))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", default="data/raw")
    parser.add_argument("--train_samples", type=int, default=16000, help="ids in the train split (both parties)")
    parser.add_argument("--eval_samples", type=int, default=4000)
    parser.add_argument("--overlap", type=float, default=0.7, help="fraction of ids held by both parties")
    parser.add_argument("--vocab_per_field", type=int, default=20, help="categories per field (<= vocab_size / 39)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    effects = rng.normal(0, 0.45, size=(39, args.vocab_per_field))
    interaction = rng.normal(0, 1.0, size=(args.vocab_per_field, args.vocab_per_field))
    for split, count in (("train", args.train_samples), ("eval", args.eval_samples)):
        oaids = [f"{split}-{value:016x}" for value in rng.integers(0, 2 ** 63, size=count)]
        ids, values, labels, probability = generate(rng, count, args.vocab_per_field, effects, interaction)
        leader, follower = _split(rng, count, args.overlap)
        both = leader & follower
        for role, holds in (("leader", leader), ("follower", follower)):
            rows = rng.permutation(np.flatnonzero(holds))  # each party's own row order
            write_party(os.path.join(args.output_dir, role, split), role, oaids, ids, values, labels, rows)
        print(f"{split}: {count} ids, leader {leader.sum()}, follower {follower.sum()}, shared {both.sum()}; "
              f"click rate {labels[both].mean():.3f}; AUC of the true probabilities on shared ids "
              f"{roc_auc(labels[both], probability[both]):.3f}")
    print(f"raw csv written under {args.output_dir}/{{leader,follower}}/{{train,eval}}/")


if __name__ == "__main__":
    main()
