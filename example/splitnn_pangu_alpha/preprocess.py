"""Turn plain-text files into PanGu-alpha training records (MindRecord).

For each input ``.txt`` file: split it into paragraphs on blank lines, tokenize each paragraph with the
jieba + SentencePiece tokenizer, append the separator id (``--eot``) after each paragraph, concatenate
the file's ids, and cut them into records of ``--seq_length`` ids (the model's seq_length + 1, because
a record yields both the inputs and the shifted labels). The tail of each file that does not fill a
record is dropped. Records are written with ``mindspore.mindrecord.FileWriter`` in ``--file_partition``
shards, schema ``{<data_column_name>: int32 [-1]}``.

About the separator id: the data loader (``src/dataset.py``) restarts positions and blocks attention
at the EOD id 6, and the loss ignores tokens equal to 6. ModelZoo's preprocess appends the EOT id 9
instead, so with its defaults no document boundary is ever seen by the model. ``--eot`` keeps
ModelZoo's default (9) for compatibility; pass ``--eot 6`` for real document separation, which is
what ``prepare_data.py`` (the example's default pipeline) does.

Example::

    python preprocess.py --input_glob 'data/corpus/train/*.txt' --output_file data/mr/train.mindrecord \\
        --vocab_model data/vocab/pangu_sp.model --seq_length 129 --eot 6 --num_workers 2
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import logging
import multiprocessing
import os
import re
import sys
import time
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

if __package__ in (None, ""):  # run as a script: make ``src`` importable
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from src.tokenizer import JIEBATokenizer  # noqa: E402  pylint: disable=wrong-import-position

logger = logging.getLogger("preprocess")

DATASET_TYPES = ("openwebtext", "wiki")
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v\u3000]*\n\s*")
_WRITE_BATCH = 1000


@dataclasses.dataclass
class PreprocessStats:
    """What one run did. ``tokens_in`` counts the paragraph ids plus the appended separators."""
    files: int = 0
    paragraphs: int = 0
    tokens_in: int = 0
    tokens_written: int = 0
    tokens_dropped: int = 0
    records: int = 0
    output_files: Tuple[str, ...] = ()
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"files={self.files} paragraphs={self.paragraphs} tokens_in={self.tokens_in} "
                f"tokens_written={self.tokens_written} tokens_dropped_in_tails={self.tokens_dropped} "
                f"records={self.records} time={self.seconds:.1f}s")


def split_paragraphs(text: str, dataset_type: str = "openwebtext") -> List[str]:
    """Paragraphs of one file's text: blank-line separated, stripped, empty ones dropped.

    ``wiki`` mode first removes heading lines (lines starting with ``=`` after leading blanks, as in
    `` = Title = ``).
    """
    if dataset_type not in DATASET_TYPES:
        raise ValueError(f"dataset_type: expected one of {DATASET_TYPES}, got {dataset_type!r}")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if dataset_type == "wiki":
        text = "\n".join(line for line in text.split("\n") if not line.lstrip().startswith("="))
    paragraphs = (p.strip() for p in _BLANK_LINES.split(text))
    return [p for p in paragraphs if p]


def read_text(path: str) -> str:
    """Read a UTF-8 text file; raises ValueError naming the file when it is not readable text."""
    try:
        with open(path, encoding="utf-8") as fin:
            return fin.read()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not valid UTF-8 text ({err})") from err
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err.strerror or err})") from err


def check_inputs(files: Sequence[str], dataset_type: str, allow_empty: bool = False) -> List[str]:
    """Reject unreadable inputs (and empty ones unless ``allow_empty``) before writing anything.

    Returns the files to process. Every offending file is named in the error, not just the first.
    """
    unreadable: List[str] = []
    empty: List[str] = []
    for path in files:
        try:
            text = read_text(path)
        except ValueError as err:
            unreadable.append(str(err))
            continue
        if not split_paragraphs(text, dataset_type):
            empty.append(path)
    if unreadable:
        raise ValueError("unreadable input files:\n  " + "\n  ".join(unreadable))
    if empty:
        msg = (f"input files without any text{' (after skipping = headings)' if dataset_type == 'wiki' else ''}: "
               + ", ".join(empty))
        if not allow_empty:
            raise ValueError(msg + " (remove them or pass --allow_empty to skip them)")
        logger.warning("%s -- skipped", msg)
    skipped = set(empty)
    usable = [p for p in files if p not in skipped]
    if not usable:
        raise ValueError("no input file has any text: " + ", ".join(files))
    return usable


def tokenize_paragraphs(tokenizer: JIEBATokenizer, paragraphs: Sequence[str], eot: int) -> np.ndarray:
    """Concatenated ids of the paragraphs, each followed by ``eot``."""
    ids: List[int] = []
    for paragraph in paragraphs:
        ids.extend(tokenizer.encode(paragraph))
        ids.append(eot)
    return np.asarray(ids, dtype=np.int32)


def chunk_ids(ids: np.ndarray, seq_length: int) -> Tuple[np.ndarray, int]:
    """Cut ids into rows of ``seq_length``; returns (records [n, seq_length], dropped tail length)."""
    n = len(ids) // seq_length
    return ids[: n * seq_length].reshape(n, seq_length), int(len(ids) - n * seq_length)


# ---- worker side (one tokenizer per process) ---------------------------------------------------
_WORKER: dict = {}


def _init_worker(vocab_model: str, eot: int, dataset_type: str, seq_length: int) -> None:
    logging.getLogger("jieba").setLevel(logging.WARNING)
    _WORKER.update(tokenizer=JIEBATokenizer(vocab_model), eot=eot, dataset_type=dataset_type,
                   seq_length=seq_length)


def _process_file(path: str) -> Tuple[str, np.ndarray, int, int, int]:
    """-> (path, records, paragraphs, tokens_in, dropped)."""
    paragraphs = split_paragraphs(read_text(path), _WORKER["dataset_type"])
    ids = tokenize_paragraphs(_WORKER["tokenizer"], paragraphs, _WORKER["eot"])
    records, dropped = chunk_ids(ids, _WORKER["seq_length"])
    return path, records, len(paragraphs), int(len(ids)), dropped


def _results(files: Sequence[str], num_workers: int, init_args: tuple) -> Iterator[tuple]:
    if num_workers <= 1 or len(files) == 1:
        _init_worker(*init_args)
        for path in files:
            yield _process_file(path)
        return
    # spawn: the parent may already run MindSpore threads, which fork would copy half-way.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(num_workers, len(files)), initializer=_init_worker, initargs=init_args) as pool:
        yield from pool.imap(_process_file, files)  # ordered: deterministic output


def expand_inputs(input_glob: Union[str, Sequence[str]]) -> List[str]:
    """Sorted files matching a glob (``**`` allowed) or a list of globs/paths; error when none."""
    patterns = [input_glob] if isinstance(input_glob, str) else list(input_glob)
    files: List[str] = []
    for pattern in patterns:
        files.extend(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    files = sorted(set(files))
    if not files:
        raise FileNotFoundError(f"--input_glob: no file matches {input_glob!r}")
    return files


def output_paths(output_file: str, file_partition: int) -> List[str]:
    """Shard files FileWriter creates for this prefix (each has a ``.db`` index beside it)."""
    if file_partition == 1:
        return [output_file]
    return [f"{output_file}{i}" for i in range(file_partition)]


def preprocess(input_glob: Union[str, Sequence[str]], output_file: str, vocab_model: str,
               seq_length: int = 1025, file_partition: int = 1, data_column_name: str = "input_ids",
               eot: int = 9, dataset_type: str = "openwebtext", num_workers: int = 1,
               allow_empty: bool = False, progress: Optional[bool] = None) -> PreprocessStats:
    """Tokenize the text files and write MindRecord shards; returns the counts.

    ``progress=None`` shows the tqdm bar (stderr) only when stderr is a terminal.
    """
    from mindspore.mindrecord import FileWriter  # pylint: disable=import-outside-toplevel
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    start = time.time()
    if seq_length < 2:
        raise ValueError(f"--seq_length: expected >= 2 (model seq_length + 1), got {seq_length}")
    if not 1 <= file_partition <= 1000:
        raise ValueError(f"--file_partition: expected 1..1000 shards, got {file_partition}")
    if not data_column_name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", data_column_name):
        raise ValueError(f"--data_column_name: expected an identifier, got {data_column_name!r}")
    if dataset_type not in DATASET_TYPES:
        raise ValueError(f"--dataset_type: expected one of {DATASET_TYPES}, got {dataset_type!r}")
    tokenizer = JIEBATokenizer(vocab_model)  # validates the model before the workers start
    if not 0 <= eot < tokenizer.vocab_size:
        raise ValueError(f"--eot: id {eot} is outside the vocabulary of {vocab_model} "
                         f"(size {tokenizer.vocab_size})")
    files = check_inputs(expand_inputs(input_glob), dataset_type, allow_empty)

    out_dir = os.path.dirname(os.path.abspath(output_file))
    os.makedirs(out_dir, exist_ok=True)
    writer = FileWriter(output_file, shard_num=file_partition, overwrite=True)
    writer.add_schema({data_column_name: {"type": "int32", "shape": [-1]}}, "pangu_alpha_tokens")
    stats = PreprocessStats(files=len(files))
    pending: List[dict] = []
    logger.info("preprocessing %d files -> %s (%d shard(s), record length %d, eot %d, %s)",
                len(files), output_file, file_partition, seq_length, eot, dataset_type)
    bar = tqdm(total=len(files), unit="file", desc="preprocess", file=sys.stderr,
               disable=(not sys.stderr.isatty()) if progress is None else not progress)
    try:
        init_args = (vocab_model, eot, dataset_type, seq_length)
        for path, records, n_par, n_in, dropped in _results(files, num_workers, init_args):
            stats.paragraphs += n_par
            stats.tokens_in += n_in
            stats.tokens_dropped += dropped
            stats.records += len(records)
            stats.tokens_written += int(records.size)
            if not len(records):
                logger.warning("%s: %d tokens, shorter than one record (%d): nothing written",
                               path, n_in, seq_length)
            pending.extend({data_column_name: row} for row in records)
            while len(pending) >= _WRITE_BATCH:
                writer.write_raw_data(pending[:_WRITE_BATCH])
                pending = pending[_WRITE_BATCH:]
            bar.update(1)
            bar.set_postfix(records=stats.records, refresh=False)
        if stats.records == 0:
            raise ValueError(f"no record written: the {stats.tokens_in} tokens of {len(files)} file(s) "
                             f"give no full record of --seq_length {seq_length} per file")
        if pending:
            writer.write_raw_data(pending)
        writer.commit()
    finally:
        bar.close()
    stats.output_files = tuple(output_paths(output_file, file_partition))
    stale = [p for p in output_paths(output_file, 1) + output_paths(output_file, 1000)
             if os.path.isfile(p) and p not in stats.output_files]
    if stale:
        logger.warning("older shards with the same prefix remain (a different --file_partition?); "
                       "a loader reading the whole directory would mix them in: %s", ", ".join(stale))
    stats.seconds = time.time() - start
    if stats.records < file_partition:
        logger.warning("only %d records for %d shards: some shards are empty", stats.records,
                       file_partition)
    logger.info("preprocess done: %s", stats.summary())
    return stats


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input_glob", required=True,
                        help="text files to read, e.g. 'corpus/*.txt' (quote it; ** allowed)")
    parser.add_argument("--output_file", required=True,
                        help="MindRecord prefix; with N>1 partitions the shards are PREFIX0..PREFIX{N-1}")
    parser.add_argument("--file_partition", type=int, default=1, help="number of shards (default 1)")
    parser.add_argument("--seq_length", type=int, default=1025,
                        help="record length = model seq_length + 1 (default 1025)")
    parser.add_argument("--data_column_name", default="input_ids", help="column name (default input_ids)")
    parser.add_argument("--eot", type=int, default=9,
                        help="id appended after every paragraph (default 9 = PanGu's <eot>, as in "
                             "ModelZoo). The loader and the loss only treat the EOD id 6 as a document "
                             "boundary, so pass --eot 6 for document separation (prepare_data.py does)")
    parser.add_argument("--vocab_model", required=True,
                        help="SentencePiece model: the official vocab.model or one from "
                             "'python -m src.tokenizer train' / prepare_data.py")
    parser.add_argument("--dataset_type", choices=DATASET_TYPES, default="openwebtext",
                        help="wiki: drop heading lines that start with '='")
    parser.add_argument("--num_workers", type=int, default=1, help="tokenizer processes (files in parallel)")
    parser.add_argument("--allow_empty", action="store_true",
                        help="skip input files without text (with a warning) instead of failing")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        stats = preprocess(args.input_glob, args.output_file, args.vocab_model,
                           seq_length=args.seq_length, file_partition=args.file_partition,
                           data_column_name=args.data_column_name, eot=args.eot,
                           dataset_type=args.dataset_type, num_workers=args.num_workers,
                           allow_empty=args.allow_empty, progress=False if args.no_progress else None)
    except (ValueError, FileNotFoundError) as err:
        logger.error("%s", err)
        return 2
    print(stats.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
