"""Small shared helpers of the PanGu-alpha example: EOD-reset positions/mask and common CLI flags.

`get_position_and_mask` is imported by the data loader (src/dataset.py) and by the synthetic-batch
generator of the trainers, so that every producer of batches builds positions and masks the same way.
`add_training_args` holds the flags shared by train_centralized.py and the split scripts
(leader / follower / local), so that all of them accept the same command line.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import sys
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from .cli import add_training_args, str2bool  # noqa: F401  (re-exported: the trainers' shared flags)

__all__ = ["get_position_and_mask", "add_training_args", "setup_logging", "str2bool", "synthetic_batch",
           "vocab_size_of", "config_from_args", "step_log_line", "LossLog", "latest_checkpoint"]


def get_position_and_mask(input_ids: np.ndarray, eod_id: int,
                          seq_length: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Position ids and attention mask of PanGu-alpha with reset at every end-of-document token.

    A record of S+1 ids packs several documents separated by `eod_id`. The model sees the first S ids
    (the last one is only a label). Positions restart at 0 right AFTER each EOD (the EOD itself closes
    its document), and a query row may only attend to earlier-or-equal columns of its own document:
    causal, and a row after an EOD at column k cannot see columns <= k.

    Args:
        input_ids: int array [S+1] or [B, S+1].
        eod_id: id of the end-of-document token (6 in PanGu-alpha).
        seq_length: optional S; if given it must equal input_ids.shape[-1] - 1.

    Returns:
        position_id: int32 [S] or [B, S].
        attention_mask: float32 [S, S] or [B, S, S], 1.0 where attention is allowed, 0.0 elsewhere.
    """
    ids = np.asarray(input_ids)
    if ids.ndim not in (1, 2):
        raise ValueError(f"input_ids must be [S+1] or [B, S+1], got shape {ids.shape}")
    if ids.shape[-1] < 2:
        raise ValueError(f"input_ids needs at least 2 ids (S+1 with S >= 1), got shape {ids.shape}")
    seq = ids.shape[-1] - 1
    if seq_length is not None and seq_length != seq:
        raise ValueError(f"input_ids has {ids.shape[-1]} ids per row; expected seq_length + 1 = {seq_length + 1}")
    single = ids.ndim == 1
    tokens = ids.reshape(-1, seq + 1)[:, :seq]
    batch = tokens.shape[0]

    idx = np.arange(seq, dtype=np.int64)
    is_eod = tokens == eod_id
    # start[b, i] = first column of the document that column i belongs to (EOD at k starts a doc at k+1)
    start_here = np.zeros((batch, seq), dtype=np.int64)
    start_here[:, 1:] = np.where(is_eod[:, :-1], idx[1:], 0)
    start = np.maximum.accumulate(start_here, axis=1)
    position_id = (idx[None, :] - start).astype(np.int32)

    causal = idx[None, :] <= idx[:, None]                                      # [S, S] col <= row
    same_doc = start[:, :, None] <= idx[None, None, :]                         # col >= start of row's doc
    attention_mask = (causal[None] & same_doc).astype(np.float32)

    if single:
        return position_id[0], attention_mask[0]
    return position_id, attention_mask


def setup_logging(level: int = logging.INFO) -> None:
    """Log records go to stdout as plain lines, so `epoch E step S/TOTAL loss: L` is greppable."""
    root = logging.getLogger()
    if any(getattr(h, "_pangu_handler", False) for h in root.handlers):
        return
    handler = _StdoutHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._pangu_handler = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time of each record (it may be replaced later,
    e.g. by a log file tee or a test's capture), not to the stream current at setup."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, _value) -> None:
        pass


def synthetic_batch(index: int, batch_size: int, seq_length: int, vocab_size: int, eod_id: int,
                    seed: int = 1, alphabet: int = 64) -> dict:
    """Batch number `index` of a learnable synthetic corpus (benchmarks, tests, smoke runs).

    Each row packs "documents" separated by `eod_id`; a document repeats a short random motif
    (2-5 tokens) drawn from `alphabet` ids starting at 10 (no special id appears by accident). The
    loss first falls to the alphabet's entropy, then lower as attention learns to copy the motif.
    Batch `index` depends only on (seed, index), so resuming at step N needs no replay. Same
    columns as the MindRecord loader.
    """
    if vocab_size <= 12:
        raise ValueError(f"synthetic data needs vocab_size > 12, got {vocab_size}")
    rng = np.random.RandomState((seed * 1000003 + index * 7919) & 0x7FFFFFFF)
    span = max(2, min(alphabet, vocab_size - 10))
    rows = np.empty((batch_size, seq_length + 1), dtype=np.int32)
    for b in range(batch_size):
        row: list = []
        while len(row) < seq_length + 1:
            length = int(rng.randint(max(2, seq_length // 4), seq_length + 1))
            motif = 10 + rng.randint(0, span, size=int(rng.randint(2, 6)))
            row.extend(np.resize(motif, length).tolist())
            row.append(eod_id)
        rows[b] = np.asarray(row[:seq_length + 1], dtype=np.int32)
    position_id, attention_mask = get_position_and_mask(rows, eod_id)
    return {"input_ids": rows, "position_id": position_id, "attention_mask": attention_mask}


def vocab_size_of(vocab_model: str) -> int:
    """Number of pieces of a SentencePiece model file."""
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    if not os.path.isfile(vocab_model):
        raise FileNotFoundError(f"--vocab_model: no such file: {vocab_model}")
    return int(spm.SentencePieceProcessor(model_file=vocab_model).get_piece_size())


def config_from_args(args: argparse.Namespace, **extra: Any):
    """PanguAlphaConfig of the --mode scale with the command-line overrides applied.

    Vocabulary: --vocab_size if given, else the size of --vocab_model if given, else the scale's.
    --num_layers / --embedding_size / --num_heads (the original's self_define flags) override any
    scale; the FFN stays 4x the hidden size when --embedding_size is given.
    """
    from .pangu_alpha_config import get_config  # pylint: disable=import-outside-toplevel
    vocab_size = args.vocab_size
    if vocab_size is None and getattr(args, "vocab_model", None):
        vocab_size = vocab_size_of(args.vocab_model)
    hidden = getattr(args, "embedding_size", None)
    overrides = dict(vocab_size=vocab_size, seq_length=args.seq_length, dropout_rate=args.dropout_rate,
                     batch_size=args.per_batch_size, param_init_seed=args.seed,
                     start_lr=args.start_lr, end_lr=args.end_lr, weight_decay=args.weight_decay,
                     loss_scale=args.loss_scale, loss_scale_window=args.loss_scale_window,
                     clip_norm=args.clip_norm, jit_forward=getattr(args, "jit_forward", True),
                     num_layers=getattr(args, "num_layers", None), hidden_size=hidden,
                     ffn_hidden_size=4 * hidden if hidden else None, num_heads=getattr(args, "num_heads", None),
                     eod_id=getattr(args, "eod_id", None), pad_id=getattr(args, "padding_id", None))
    overrides.update(extra)
    return get_config(args.mode, **overrides)


def step_log_line(epoch: int, step: int, total: int, loss: float) -> str:
    """The log line every trainer prints: `epoch E step S/TOTAL loss: L` (E and S 1-based)."""
    return f"epoch {epoch} step {step}/{total} loss: {loss:.6f}"


class LossLog:
    """Collects per-step records and writes them as .json (list of dicts) or .csv, for plotting."""

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self.records: List[Dict[str, Any]] = []

    def add(self, **record: Any) -> None:
        self.records.append(record)

    def load_existing(self, up_to_step: int) -> None:
        """On resume keep the earlier records (steps <= up_to_step) so the curve stays whole."""
        if not self.path or not os.path.isfile(self.path):
            return
        try:
            if self.path.endswith(".csv"):
                with open(self.path, newline="", encoding="utf-8") as f:
                    rows = [dict(r) for r in csv.DictReader(f)]
                for r in rows:
                    for k, v in r.items():
                        try:
                            r[k] = float(v) if "." in v or "e" in v.lower() else int(v)
                        except ValueError:
                            pass
            else:
                with open(self.path, encoding="utf-8") as f:
                    rows = json.load(f)
        except (OSError, ValueError) as err:
            logging.getLogger(__name__).warning("could not read earlier loss log %s: %s", self.path, err)
            return
        self.records = [r for r in rows if int(r.get("step", 0)) <= up_to_step] + self.records

    def write(self) -> None:
        if not self.path:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        if self.path.endswith(".csv"):
            keys: List[str] = []
            for r in self.records:
                keys.extend(k for k in r if k not in keys)
            with open(self.path, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=keys)
                writer.writeheader()
                writer.writerows(self.records)
        else:
            with open(self.path, "w", encoding="utf-8") as f:
                json.dump(self.records, f, indent=1)


def latest_checkpoint(path: str, prefix: str) -> Optional[Tuple[str, int]]:
    """(file, step) of the newest `<prefix>_step_<N>.ckpt` in directory `path`, or of the file
    `path` itself; None if there is none."""
    pattern = re.compile(re.escape(prefix) + r"_step_(\d+)\.ckpt$")
    if os.path.isfile(path):
        m = pattern.search(os.path.basename(path)) or re.search(r"_step_(\d+)\.ckpt$", path)
        return path, int(m.group(1)) if m else -1
    if not os.path.isdir(path):
        return None
    found = []
    for name in os.listdir(path):
        m = pattern.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(path, name)))
    if not found:
        return None
    step, file = max(found)
    return file, step


def progress(items: Iterable[Any], total: int, what: str, every_percent: int = 10) -> Iterator[Any]:
    """Yield `items`, logging `what: i/total (p %), elapsed, ETA` about every `every_percent` percent.

    A log line rather than a terminal bar: it stays readable in log files and over ssh.
    """
    import time  # pylint: disable=import-outside-toplevel
    log = logging.getLogger("progress")
    total = max(int(total), 0)
    stride = max(1, total * every_percent // 100) if total else 1
    log.info("%s: %d batches", what, total)
    t0 = time.time()
    done = 0
    for item in items:
        yield item
        done += 1
        if done % stride == 0 or done == total:
            elapsed = time.time() - t0
            eta = elapsed / done * max(total - done, 0)
            log.info("%s: %d/%d (%d %%), %.1f s, about %.1f s left", what, done, total,
                     100 * done // max(total, 1), elapsed, eta)
