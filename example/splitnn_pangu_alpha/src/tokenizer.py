"""PanGu-alpha tokenizer: jieba word cut + SentencePiece, and a trainer for the SentencePiece model.

Encoding (as PanGu-alpha does it): jieba cuts the text into words; inside every word a space becomes
U+2582 (``▂``) and a newline U+2583 (``▃``); the words are joined with single spaces and the result is
encoded by SentencePiece. Decoding reverses it: SentencePiece decode, drop the joining spaces, map
U+2582 back to a space and U+2583 to a newline. (Text that itself contains U+2582/U+2583 therefore
decodes them as whitespace -- the same limitation as the original.)

Special ids, in their PanGu-alpha places: ``eod = pad = 6`` (end of document; the data loader resets
positions and attention there and the loss ignores it), ``eot = 9`` (end of text, the separator that
``preprocess.py`` appends by default). The official 40000-piece ``vocab.model`` can be used as is;
:func:`train_sentencepiece` builds a compatible model from any corpus (layout in its docstring).

CLI::

    python -m src.tokenizer train --input_glob 'data/corpus/train/*.txt' --vocab_size 8000 \
        --model_prefix data/vocab/pangu_sp
    python -m src.tokenizer encode --vocab_model data/vocab/pangu_sp.model --text '今天天气不错'
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import re
import sys
import time
from collections import Counter
from typing import Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np

logger = logging.getLogger(__name__)

SPACE_SUB = "\u2582"
NEWLINE_SUB = "\u2583"
_ENCODE_MAP = str.maketrans({" ": SPACE_SUB, "\n": NEWLINE_SUB})
_DECODE_MAP = str.maketrans({SPACE_SUB: " ", NEWLINE_SUB: "\n"})

EOD_ID = 6
EOT_ID = 9
EOD_PIECE = "<eod>"
EOT_PIECE = "<eot>"
UNK_PIECE = "<unk>"
BOS_PIECE = "<s>"
EOS_PIECE = "</s>"
# Control symbols that SentencePiece places, in order, on the free ids 3, 4, 5, 7, 8, 9
# (0/1/2 = unk/bos/eos and 6 = pad are taken first), which puts <eot> on 9.
CONTROL_SYMBOLS = ("<reserved_3>", "<reserved_4>", "<reserved_5>", "<reserved_7>", "<reserved_8>",
                   EOT_PIECE)

_jieba_ready = False


def _jieba():
    """Import jieba once, quietly (its dictionary loads lazily on the first cut, ~1 s)."""
    global _jieba_ready  # pylint: disable=global-statement
    import jieba  # pylint: disable=import-outside-toplevel
    if not _jieba_ready:
        jieba.setLogLevel(logging.WARNING)
        _jieba_ready = True
    return jieba


def pre_tokenize(text: str) -> str:
    """jieba cut + whitespace mapping + space join: the string SentencePiece sees."""
    words = _jieba().lcut(text.replace("\r\n", "\n"))
    return " ".join(word.translate(_ENCODE_MAP) for word in words)


def post_detokenize(text: str) -> str:
    """Inverse of :func:`pre_tokenize` on SentencePiece's decoded string."""
    return text.replace(" ", "").translate(_DECODE_MAP)


class JIEBATokenizer:
    """jieba + SentencePiece tokenizer with PanGu-alpha's special ids.

    Args:
        vocab_model_path: a SentencePiece ``.model`` file (the official ``vocab.model`` or one made by
            :func:`train_sentencepiece`).
        eod_id / eot_id: override the special ids. By default they are the ids of the ``<eod>`` /
            ``<eot>`` pieces when the model has them, else PanGu's 6 / 9.
    """

    def __init__(self, vocab_model_path: str, eod_id: Optional[int] = None,
                 eot_id: Optional[int] = None):
        import sentencepiece as spm  # pylint: disable=import-outside-toplevel
        if not os.path.isfile(vocab_model_path):
            raise FileNotFoundError(f"SentencePiece model not found: {vocab_model_path}")
        self.vocab_model_path = vocab_model_path
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(vocab_model_path)
        except (OSError, RuntimeError) as err:
            raise ValueError(f"{vocab_model_path}: not a valid SentencePiece model ({err})") from err
        self._eod_id = self._special(eod_id, EOD_PIECE, EOD_ID)
        self._eot_id = self._special(eot_id, EOT_PIECE, EOT_ID)

    def _special(self, given: Optional[int], piece: str, default: int) -> int:
        if given is not None:
            special = int(given)
        else:
            special = self.sp.piece_to_id(piece)
            if special == self.sp.unk_id() and piece != UNK_PIECE:
                logger.warning("%s has no %s piece; using PanGu's id %d", self.vocab_model_path,
                               piece, default)
                special = default
        if not 0 <= special < self.vocab_size:
            raise ValueError(f"{self.vocab_model_path}: special id {special} for {piece} is outside "
                             f"the vocabulary (size {self.vocab_size})")
        return special

    @property
    def vocab_size(self) -> int:
        return int(self.sp.get_piece_size())

    @property
    def eod_id(self) -> int:
        return self._eod_id

    @property
    def pad_id(self) -> int:
        """PanGu pads with the EOD id (padding is masked out of the loss like EOD)."""
        return self._eod_id

    @property
    def eot_id(self) -> int:
        return self._eot_id

    def byte_piece_ids(self) -> List[int]:
        """Ids of the byte-fallback pieces <0x00>..<0xFF> (rare characters spelt as UTF-8 bytes)."""
        return [i for i in range(self.vocab_size) if self.sp.is_byte(i)]

    def tokenize(self, text: str) -> List[str]:
        """Text -> SentencePiece pieces."""
        return self.sp.encode(pre_tokenize(text), out_type=str)

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> List[int]:
        return [self.sp.piece_to_id(token) for token in tokens]

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> List[str]:
        return [self.sp.id_to_piece(int(i)) for i in ids]

    def encode(self, text: str) -> List[int]:
        """Text -> token ids (no special ids added)."""
        if not text:
            return []
        return self.sp.encode(pre_tokenize(text), out_type=int)

    def decode(self, ids: Union[Sequence[int], np.ndarray]) -> str:
        """Token ids -> text. Control ids (eod, eot, pad) decode to nothing."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        return post_detokenize(self.sp.decode(ids))


def _iter_training_sentences(text_files: Sequence[str]) -> Iterator[str]:
    """Every non-empty line of the corpus, pre-tokenized exactly like :meth:`JIEBATokenizer.encode`.

    Lines (not whole paragraphs) keep the trainer's sentences short; the newline marker U+2583 is a
    user-defined symbol, so it is in the vocabulary anyway.
    """
    for path in text_files:
        with open(path, encoding="utf-8") as fin:
            try:
                for line in fin:
                    line = line.rstrip("\n")
                    if line.strip():
                        yield pre_tokenize(line)
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}: not valid UTF-8 text ({err})") from err


def _auto_coverage(sentences: Sequence[str], max_chars: int, ceiling: float = 0.9995) -> float:
    """Largest coverage <= ceiling whose required character set has at most ``max_chars`` chars."""
    counts: Counter = Counter()
    for sentence in sentences:
        counts.update(sentence.replace(" ", ""))
    total = sum(counts.values())
    freqs = sorted(counts.values(), reverse=True)
    if len(freqs) <= max_chars or total == 0:
        return ceiling
    covered = sum(freqs[:max_chars]) / total
    # SentencePiece keeps characters while the accumulated share stays within the coverage.
    # SentencePiece refuses coverages below 0.98.
    return max(0.98, min(ceiling, covered * 0.999))


def train_sentencepiece(text_files: Sequence[str], model_prefix: str, vocab_size: int = 8000,
                        model_type: str = "unigram", character_coverage: Optional[float] = None,
                        byte_fallback: bool = True, input_sentence_size: int = 2_000_000,
                        num_threads: int = 2, seed_sentencepiece_size: int = 1_000_000) -> str:
    """Train a SentencePiece model on jieba-cut text with PanGu-alpha's special ids.

    Id layout (verified by the tests)::

        0 <unk>   1 <s>   2 </s>
        3 <reserved_3>  4 <reserved_4>  5 <reserved_5>
        6 <eod>   (= SentencePiece's pad piece: eod = pad = 6)
        7 <reserved_7>  8 <reserved_8>
        9 <eot>
        10 U+2582 (space marker)  11 U+2583 (newline marker)   -- user-defined symbols
        12..267 <0x00>..<0xFF>  -- byte fallback pieces (with byte_fallback=True)
        268.. learned pieces

    How: SentencePiece puts unk/bos/eos/pad on the ids we name (pad_id=6 with pad_piece='<eod>'), then
    gives control symbols the lowest free ids in order (3, 4, 5, 7, 8, 9 -> the sixth is <eot>), then
    user-defined symbols, then byte pieces. Control pieces are never produced from text and decode
    to nothing. The normalization rule is ``identity`` so full-width characters and repeated spaces
    survive a round trip; byte fallback makes any character encodable exactly.

    ``hard_vocab_limit`` is off, so a corpus too small for ``vocab_size`` yields a smaller vocabulary
    (read it from ``JIEBATokenizer(...).vocab_size``) instead of failing. ``character_coverage=None``
    picks min(0.9995, the coverage at which single characters fill at most half of the learned
    pieces), but at least 0.98 (SentencePiece's lower limit): Chinese has thousands of characters and a small vocabulary would otherwise be refused;
    the rarest characters then go through byte fallback.

    Returns:
        path of the written ``<model_prefix>.model`` (a ``.vocab`` file is written beside it).
    """
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    files = list(text_files)
    if not files:
        raise ValueError("train_sentencepiece: no text files given")
    min_vocab = 12 + (256 if byte_fallback else 0) + 1
    if vocab_size < min_vocab:
        raise ValueError(f"vocab_size: {vocab_size} is too small; the special and byte pieces alone "
                         f"need {min_vocab - 1} ids")
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"train_sentencepiece: text file not found: {path}")
    out_dir = os.path.dirname(os.path.abspath(model_prefix))
    os.makedirs(out_dir, exist_ok=True)
    start = time.time()
    sentences = list(_iter_training_sentences(files))
    if not sentences:
        raise ValueError(f"train_sentencepiece: the text files are empty: {files}")
    n_meta = min_vocab - 1
    if character_coverage is None:
        character_coverage = _auto_coverage(sentences, max(1, (vocab_size - n_meta) // 2))
    logger.info("training SentencePiece on %d lines from %d files (vocab %d, coverage %.4f)",
                len(sentences), len(files), vocab_size, character_coverage)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_prefix=model_prefix,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        byte_fallback=byte_fallback,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=False,
        unk_id=0, unk_piece=UNK_PIECE,
        bos_id=1, bos_piece=BOS_PIECE,
        eos_id=2, eos_piece=EOS_PIECE,
        pad_id=EOD_ID, pad_piece=EOD_PIECE,
        control_symbols=list(CONTROL_SYMBOLS),
        user_defined_symbols=[SPACE_SUB, NEWLINE_SUB],
        hard_vocab_limit=False,
        input_sentence_size=input_sentence_size,
        shuffle_input_sentence=True,
        seed_sentencepiece_size=seed_sentencepiece_size,
        max_sentence_length=1 << 15,
        num_threads=num_threads,
        minloglevel=2,
    )
    model_path = model_prefix + ".model"
    tok = JIEBATokenizer(model_path)
    if (tok.eod_id, tok.eot_id, tok.sp.pad_id()) != (EOD_ID, EOT_ID, EOD_ID):
        raise RuntimeError(f"{model_path}: special ids came out as eod={tok.eod_id}, "
                           f"eot={tok.eot_id}, pad={tok.sp.pad_id()} instead of 6/9/6")
    logger.info("trained SentencePiece %s: %d pieces from %d files in %.1f s", model_path,
                tok.vocab_size, len(files), time.time() - start)
    return model_path


def _expand_glob(pattern: str) -> List[str]:
    files = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    if not files:
        raise FileNotFoundError(f"--input_glob: no file matches {pattern!r}")
    return files


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: ``train`` a SentencePiece model, or ``encode``/``decode`` for a quick look."""
    parser = argparse.ArgumentParser(prog="python -m src.tokenizer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_train = sub.add_parser("train", help="train a SentencePiece model with PanGu special ids")
    p_train.add_argument("--input_glob", required=True, help="text files (glob, ** allowed)")
    p_train.add_argument("--model_prefix", required=True, help="writes PREFIX.model/.vocab")
    p_train.add_argument("--vocab_size", type=int, default=8000)
    p_train.add_argument("--model_type", default="unigram", choices=["unigram", "bpe"])
    p_train.add_argument("--num_threads", type=int, default=2)
    p_enc = sub.add_parser("encode", help="print the ids of --text")
    p_enc.add_argument("--vocab_model", required=True)
    p_enc.add_argument("--text", required=True)
    p_dec = sub.add_parser("decode", help="print the text of --ids (comma separated)")
    p_dec.add_argument("--vocab_model", required=True)
    p_dec.add_argument("--ids", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.cmd == "train":
        path = train_sentencepiece(_expand_glob(args.input_glob), args.model_prefix,
                                   vocab_size=args.vocab_size, model_type=args.model_type,
                                   num_threads=args.num_threads)
        print(path)
    elif args.cmd == "encode":
        tok = JIEBATokenizer(args.vocab_model)
        ids = tok.encode(args.text)
        print(" ".join(map(str, ids)))
        print(" ".join(tok.convert_ids_to_tokens(ids)), file=sys.stderr)
    else:
        tok = JIEBATokenizer(args.vocab_model)
        ids = [int(x) for x in re.split(r"[,\s]+", args.ids.strip()) if x]
        print(tok.decode(ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
