"""Turn Criteo's click logs into the two parties' raw csv tables (the layout generate_data.py writes).

Input: the Criteo Display Advertising Challenge ``train.txt`` (Kaggle, 2014; ~45 M lines): one
sample per line, 40 tab-separated columns -- the label (0/1), 13 integer features I1..I13, 26
categorical features C1..C26 (8 hex digits, hashed by Criteo). Any column may be empty.

Each line gets an id (``criteo-<line number>``). Field f (0..38) becomes ``feat_ids_f`` (a
vocabulary id: a stable hash of (f, token) modulo ``--vocab_size``, where the token of an integer
field is its log2 bucket and the token of a categorical field its hex string; empty -> "missing")
and ``feat_vals_f`` (1 for categorical fields; log(1 + value) / 10, at most 1, for integer
fields). The leader keeps fields 0-6 and 13-25 and the label, the follower fields 7-12 and 26-38.
To exercise the data join, each party drops a random share of the lines (``--overlap`` of them
stay at both), and each party's rows are written in its own random order.

    python preprocess_criteo.py train.txt [--output_dir data/raw] [--limit 200000] [--eval_fraction 0.1]
    # then: bash run_vfl_process_leader.sh ... / run_vfl_process_follower.sh ... with --vocab_size set
    # to the same value, e.g. --vocab_size 200000 --emb_dim 32 --deep_layer_dim "[256, 128]"
"""
import argparse
import csv
import hashlib
import math
import os
import random

from criteo_dataset import schema_columns
from wide_and_deep import FOLLOWER_FIELDS, LEADER_FIELDS

INTEGER_FIELDS = 13


def encode(line_fields, vocab_size):
    """(ids, vals) of the 39 fields of one Criteo line (label excluded)."""
    ids, vals = [], []
    for field, raw in enumerate(line_fields):
        if field < INTEGER_FIELDS:
            value = int(raw) if raw.strip() not in ("", "-") else None
            token = "missing" if value is None else str(int(math.log2(1 + max(value, 0))))
            vals.append(0.0 if value is None else min(math.log1p(max(value, 0)) / 10, 1.0))
        else:
            token = raw.strip() or "missing"
            vals.append(1.0)
        digest = hashlib.blake2b(f"{field}:{token}".encode(), digest_size=8).digest()
        ids.append(int.from_bytes(digest, "little") % vocab_size)
    return ids, vals


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", help="Criteo train.txt (tab-separated)")
    parser.add_argument("--output_dir", default="data/raw")
    parser.add_argument("--limit", type=int, default=0, help="read at most this many lines (0: all)")
    parser.add_argument("--eval_fraction", type=float, default=0.1)
    parser.add_argument("--vocab_size", type=int, default=200000)
    parser.add_argument("--overlap", type=float, default=0.8, help="share of lines kept by both parties")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    writers, handles = {}, []
    for role in ("leader", "follower"):
        for split in ("train", "eval"):
            folder = os.path.join(args.output_dir, role, split)
            os.makedirs(folder, exist_ok=True)
            handle = open(os.path.join(folder, "part_0.csv"), "w", newline="")
            handles.append(handle)
            writer = csv.writer(handle)
            writer.writerow(["oaid"] + schema_columns(role))
            writers[role, split] = writer
    alone = (1 - args.overlap) / 2
    count = 0
    with open(args.input, "r", encoding="utf-8") as source:
        for number, line in enumerate(source):
            if args.limit and number >= args.limit:
                break
            columns = line.rstrip("\n").split("\t")
            if len(columns) != 40:
                raise SystemExit(f"{args.input}:{number + 1}: {len(columns)} tab-separated columns, expected 40")
            ids, vals = encode(columns[1:], args.vocab_size)
            split = "eval" if rng.random() < args.eval_fraction else "train"
            draw = rng.random()
            for role, fields, keep in (("leader", LEADER_FIELDS, draw >= alone),
                                       ("follower", FOLLOWER_FIELDS, draw < alone or draw >= 2 * alone)):
                if keep:
                    row = [f"criteo-{number:09d}"] + [ids[f] for f in fields] + [f"{vals[f]:.4g}" for f in fields]
                    writers[role, split].writerow(row + ([int(columns[0])] if role == "leader" else []))
            count += 1
    for handle in handles:
        handle.close()
    print(f"{count} lines -> {args.output_dir}/{{leader,follower}}/{{train,eval}}/part_0.csv "
          f"(vocab_size {args.vocab_size}; rows are in line order: shuffle happens after the join)")


if __name__ == "__main__":
    main()
