"""Build everything the PanGu-alpha example trains on, in one idempotent command.

Steps (each skipped when its output exists and was built from the same inputs and settings; a
``.prepared.json`` stamp beside each output records them; ``--force`` rebuilds everything)::

    1. corpus     data/corpus/{train,eval}/*.txt      embedded People's Daily + reviews (src/corpus.py)
                                                      -- or your own text via --train_glob/--eval_glob
    2. vocabulary data/vocab/pangu_sp.model           SentencePiece with eod=pad=6, eot=9
                                                      -- or the official vocab.model via --vocab_model
    3. records    data/mindrecord/{train,eval}/pangu.mindrecord   preprocess.py, --seq_length ids each

The records separate documents with the EOD id 6 (``--eot 6``), so the loader's EOD reset and the
loss mask see every document boundary; see preprocess.py for why ModelZoo's default 9 does not.

Training scripts call :func:`prepare` and use the returned paths::

    from prepare_data import prepare
    paths = prepare("data", seq_length=129, vocab_size=4000)
    train = create_dataset(paths["train_data"], batch_size=8)      # vocab: paths["vocab_size"]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from typing import Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make ``src`` and ``preprocess`` importable
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=wrong-import-position
import preprocess as preprocess_mod  # noqa: E402
from src.corpus import write_default_corpus  # noqa: E402
from src.tokenizer import EOD_ID, JIEBATokenizer, train_sentencepiece  # noqa: E402

logger = logging.getLogger("prepare_data")

EXAMPLE_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA_DIR = os.path.join(EXAMPLE_DIR, "data")
STAMP = ".prepared.json"
CORPUS_VERSION = 1
RECORD_NAME = "pangu.mindrecord"


def _say(msg: str) -> None:
    print(f"[prepare_data] {msg}", flush=True)


def _fingerprint(paths: Sequence[str]) -> str:
    """Cheap identity of input files: path, size and modification time."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        st = os.stat(path)
        digest.update(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _file_hash(path: str) -> str:
    with open(path, "rb") as fin:
        return hashlib.sha256(fin.read()).hexdigest()


def _stamp_matches(directory: str, params: dict) -> bool:
    try:
        with open(os.path.join(directory, STAMP), encoding="utf-8") as fin:
            return json.load(fin) == params
    except (OSError, ValueError):
        return False


def _write_stamp(directory: str, params: dict) -> None:
    with open(os.path.join(directory, STAMP), "w", encoding="utf-8") as fout:
        json.dump(params, fout, indent=1, sort_keys=True)


def _txt_files(directory: str) -> List[str]:
    return sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".txt"))


def prepare(data_dir: str = DEFAULT_DATA_DIR, seq_length: int = 129, vocab_size: int = 4000,
            vocab_model: Optional[str] = None, force: bool = False, max_chars: Optional[int] = None,
            train_glob: Optional[str] = None, eval_glob: Optional[str] = None, eot: int = EOD_ID,
            num_workers: int = 2, file_partition: int = 1) -> Dict[str, object]:
    """Build (or reuse) corpus, SentencePiece model and MindRecord files under ``data_dir``.

    Args:
        seq_length: record length = model seq_length + 1 (129 for the ``small`` config).
        vocab_size: pieces of the trained SentencePiece model (ignored with ``vocab_model``).
        vocab_model: an existing SentencePiece model (e.g. the official ``vocab.model``).
        max_chars: cap on the embedded corpus size (characters), for quick runs.
        train_glob / eval_glob: your own text instead of the embedded corpus (eval optional).
        eot: separator id appended after each paragraph (default the EOD id 6; see module doc).

    Returns:
        dict with ``train_data``/``eval_data`` (MindRecord directories for ``create_dataset``;
        ``eval_data`` is None with a train_glob but no eval_glob), ``vocab_model``, ``vocab_size``,
        ``eod_id``, ``eot_id``, ``seq_length``, ``corpus_train``/``corpus_eval`` (text file lists).
    """
    start = time.time()
    data_dir = os.path.abspath(data_dir)
    os.makedirs(data_dir, exist_ok=True)

    # 1. corpus ---------------------------------------------------------------------------------
    if train_glob:
        corpus_train = preprocess_mod.expand_inputs(train_glob)
        corpus_eval = preprocess_mod.expand_inputs(eval_glob) if eval_glob else []
        _say(f"corpus: using {len(corpus_train)} train / {len(corpus_eval)} eval file(s) of yours")
    else:
        corpus_dir = os.path.join(data_dir, "corpus")
        params = {"version": CORPUS_VERSION, "max_chars": max_chars, "eval_fraction": 0.05}
        if not force and _stamp_matches(corpus_dir, params):
            _say(f"corpus: exists, skipped ({corpus_dir})")
        else:
            _say(f"corpus: writing the embedded default corpus to {corpus_dir}")
            if os.path.isdir(corpus_dir):
                shutil.rmtree(corpus_dir)
            write_default_corpus(corpus_dir, eval_fraction=0.05, max_chars=max_chars)
            _write_stamp(corpus_dir, params)
        corpus_train = _txt_files(os.path.join(corpus_dir, "train"))
        corpus_eval = _txt_files(os.path.join(corpus_dir, "eval"))

    # 2. vocabulary -----------------------------------------------------------------------------
    if vocab_model:
        vocab_model = os.path.abspath(vocab_model)
        _say(f"vocabulary: using {vocab_model}")
    else:
        vocab_dir = os.path.join(data_dir, "vocab")
        vocab_model = os.path.join(vocab_dir, "pangu_sp.model")
        params = {"vocab_size": vocab_size, "corpus": _fingerprint(corpus_train)}
        if not force and os.path.isfile(vocab_model) and _stamp_matches(vocab_dir, params):
            _say(f"vocabulary: exists, skipped ({vocab_model})")
        else:
            _say(f"vocabulary: training SentencePiece ({vocab_size} pieces) -> {vocab_model}")
            os.makedirs(vocab_dir, exist_ok=True)
            t0 = time.time()
            train_sentencepiece(corpus_train, vocab_model[: -len(".model")], vocab_size=vocab_size)
            _write_stamp(vocab_dir, params)
            _say(f"vocabulary: done in {time.time() - t0:.1f} s")
    tokenizer = JIEBATokenizer(vocab_model)

    # 3. records --------------------------------------------------------------------------------
    vocab_hash = _file_hash(vocab_model)
    outputs: Dict[str, Optional[str]] = {}
    for split, files in (("train", corpus_train), ("eval", corpus_eval)):
        if not files:
            outputs[split] = None
            continue
        out_dir = os.path.join(data_dir, "mindrecord", split)
        params = {"seq_length": seq_length, "eot": eot, "vocab": vocab_hash,
                  "inputs": _fingerprint(files), "file_partition": file_partition}
        if not force and _stamp_matches(out_dir, params):
            _say(f"records ({split}): exist, skipped ({out_dir})")
        else:
            _say(f"records ({split}): preprocessing {len(files)} file(s) -> {out_dir}")
            if os.path.isdir(out_dir):
                shutil.rmtree(out_dir)
            stats = preprocess_mod.preprocess(files, os.path.join(out_dir, RECORD_NAME), vocab_model,
                                              seq_length=seq_length, file_partition=file_partition,
                                              eot=eot, num_workers=num_workers)
            _write_stamp(out_dir, params)
            _say(f"records ({split}): {stats.summary()}")
        outputs[split] = out_dir

    _say(f"ready in {time.time() - start:.1f} s: train={outputs['train']} eval={outputs['eval']} "
         f"vocab={vocab_model} ({tokenizer.vocab_size} pieces)")
    return {
        "data_dir": data_dir,
        "corpus_train": corpus_train,
        "corpus_eval": corpus_eval,
        "vocab_model": vocab_model,
        "vocab_size": tokenizer.vocab_size,
        "eod_id": tokenizer.eod_id,
        "eot_id": tokenizer.eot_id,
        "seq_length": seq_length,
        "train_data": outputs["train"],
        "eval_data": outputs["eval"],
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR, help="output root (default ./data)")
    parser.add_argument("--seq_length", type=int, default=129,
                        help="record length = model seq_length + 1 (default 129: the small config)")
    parser.add_argument("--vocab_size", type=int, default=4000, help="SentencePiece pieces to train")
    parser.add_argument("--vocab_model", default=None, help="use this SentencePiece model instead")
    parser.add_argument("--train_glob", default=None, help="your own training text (replaces the corpus)")
    parser.add_argument("--eval_glob", default=None, help="your own evaluation text")
    parser.add_argument("--max_chars", type=int, default=None, help="cap the embedded corpus size")
    parser.add_argument("--eot", type=int, default=EOD_ID,
                        help="paragraph separator id (default 6 = EOD: documents are separated)")
    parser.add_argument("--num_workers", type=int, default=2, help="tokenizer processes")
    parser.add_argument("--file_partition", type=int, default=1, help="MindRecord shards per split")
    parser.add_argument("--force", action="store_true", help="rebuild everything")
    parser.add_argument("--json", action="store_true", help="print the resulting paths as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        paths = prepare(args.data_dir, seq_length=args.seq_length, vocab_size=args.vocab_size,
                        vocab_model=args.vocab_model, force=args.force, max_chars=args.max_chars,
                        train_glob=args.train_glob, eval_glob=args.eval_glob, eot=args.eot,
                        num_workers=args.num_workers, file_partition=args.file_partition)
    except (ValueError, FileNotFoundError) as err:
        logger.error("%s", err)
        return 2
    if args.json:
        print(json.dumps(paths, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
