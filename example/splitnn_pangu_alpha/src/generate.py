"""Text generation with PanGu-alpha: next-token choice and the generation loop, for every layout.

Options (the original example's flags): `top_k_num` (1 = greedy), `top_p` (nucleus sampling when
< 1.0, which then replaces top-k), `frequency_penalty` / `presence_penalty` (subtracted from the
log-probabilities of tokens already generated: per occurrence / once), `max_generate_length`,
`end_token` (stop when chosen; not emitted), `use_past` (key/value cache: one position per
token instead of recomputing the whole sequence), `seed`.

`PanguGenerator` is party A's side of generation: embedding, query layer and head, with the
transformer blocks behind a session object (`run(hidden, mask, start)`): a local
`incremental.BlocksSession` for centralised generation, a remote one at party B for split
generation. Either way party A alone sees the token ids.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
from mindspore import Tensor

from .incremental import SequenceTooLong, TopDecoder
from .pangu_alpha_config import PanguAlphaConfig
from .utils import get_position_and_mask

logger = logging.getLogger(__name__)

__all__ = ["GenerateOptions", "options_from_args", "choose_token", "generate_ids",
           "PanguGenerator"]


@dataclass
class GenerateOptions:
    """How to pick tokens; defaults are greedy (deterministic) with the cache on."""

    top_k_num: int = 1
    top_p: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    max_generate_length: int = 32
    end_token: int = 9
    use_past: bool = True
    seed: int = 1
    banned_ids: Tuple[int, ...] = ()   # never chosen (the showcase: byte-fallback pieces)

    def __post_init__(self) -> None:
        if self.top_k_num < 1:
            raise ValueError(f"--top_k_num must be >= 1 (1 = greedy), got {self.top_k_num}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"--top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if self.max_generate_length < 1:
            raise ValueError(f"--max_generate_length must be >= 1, got {self.max_generate_length}")

    @property
    def greedy(self) -> bool:
        return self.top_k_num == 1 and self.top_p >= 1.0


def options_from_args(args: argparse.Namespace) -> GenerateOptions:
    names = [f.name for f in dataclasses.fields(GenerateOptions)]
    return GenerateOptions(**{k: getattr(args, k) for k in names if getattr(args, k, None) is not None})


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - np.max(logits)
    return z - np.log(np.sum(np.exp(z)))


def choose_token(logits: np.ndarray, counts: np.ndarray, options: GenerateOptions,
                 rng: np.random.Generator) -> int:
    """The next token from the logits [V] of the last position, given the counts of generated tokens."""
    scores = _log_softmax(np.asarray(logits).reshape(-1))
    scores = scores - counts * options.frequency_penalty - (counts > 0) * options.presence_penalty
    if options.banned_ids:
        scores[list(options.banned_ids)] = -np.inf
    if options.greedy:
        return int(np.argmax(scores))
    order = np.argsort(-scores, kind="stable")
    probs = np.exp(scores[order] - scores[order[0]])
    probs /= probs.sum()
    if options.top_p < 1.0:
        # the smallest set of most likely tokens whose probability reaches top_p
        keep = int(np.searchsorted(np.cumsum(probs), options.top_p)) + 1
    else:
        keep = options.top_k_num
    keep = max(1, min(keep, probs.size))
    probs = probs[:keep] / probs[:keep].sum()
    return int(order[rng.choice(keep, p=probs)])


def generate_ids(model: Any, prompt_ids: Sequence[int], options: GenerateOptions, vocab_size: int,
                 seq_length: int, rng: Optional[np.random.Generator] = None) -> List[int]:
    """Continue `prompt_ids`; returns the new ids (without the end token).

    `model` has `start(ids) -> logits` (a new sequence) and `extend(ids, token) -> logits` (the
    sequence plus one token; with the cache only the token is computed). Stops at `end_token`,
    after `max_generate_length` tokens, or when the sequence fills seq_length.
    """
    prompt = [int(t) for t in prompt_ids]
    if not prompt:
        raise ValueError("empty prompt: nothing to continue")
    if len(prompt) >= seq_length:
        raise SequenceTooLong(f"the prompt has {len(prompt)} tokens but the model was trained with seq_length "
                              f"{seq_length}: at most {seq_length - 1} prompt tokens leave room to generate")
    rng = rng if rng is not None else np.random.default_rng(options.seed)
    counts = np.zeros(vocab_size, np.float64)
    limit = min(len(prompt) + options.max_generate_length, seq_length)
    ids = list(prompt)
    logits = model.start(ids)
    while True:
        token = choose_token(logits, counts, options, rng)
        if token == options.end_token:
            break
        ids.append(token)
        counts[token] += 1
        if len(ids) >= limit:
            if len(ids) == seq_length and len(ids) - len(prompt) < options.max_generate_length:
                logger.info("generation stopped at the trained seq_length %d", seq_length)
            break
        logits = model.extend(ids, token)
    return ids[len(prompt):]


class PanguGenerator:
    """Party A's generation: embedding -> blocks session -> query layer -> tied head.

    embedding: the `EmbeddingLayer` cell; top: a `PanguAlphaBackbone` holding the "top" part;
    head: `PanguAlphaHead`; open_blocks: makes a fresh blocks session (`run(hidden, mask, start)`,
    `close()`). With `use_past` each extension sends one position to the blocks and runs one
    position of the query layer; without, the whole sequence is recomputed every token.
    """

    def __init__(self, config: PanguAlphaConfig, embedding: Any, top: Any, head: Any,
                 open_blocks: Callable[[], Any], use_past: bool = True) -> None:
        self.config = config
        self.embedding = embedding
        self.embedding.set_train(False)
        self.top = TopDecoder(top, head, config)
        self.head = head
        self.open_blocks = open_blocks
        self.use_past = use_past
        self.blocks: Any = None
        self._k = self._v = None
        self._doc_start = 0

    def _word_table(self) -> Tensor:
        return self.embedding.word_embedding.embedding_table

    def _logits(self, top_out: Tensor) -> np.ndarray:
        return self.head(top_out, self._word_table()).asnumpy().reshape(-1)

    def start(self, ids: Sequence[int]) -> np.ndarray:
        """Run a whole sequence (new blocks session); logits of its last position."""
        ids_arr = np.asarray(ids, np.int32).reshape(1, -1)
        n = ids_arr.shape[1]
        if n > self.config.seq_length:
            raise SequenceTooLong(f"{n} tokens exceed the trained seq_length {self.config.seq_length}")
        if self.blocks is None:
            self.blocks = self.open_blocks()
        position_id, mask = get_position_and_mask(np.concatenate([ids_arr, ids_arr[:, -1:]], 1), self.config.eod_id)
        emb, _ = self.embedding(Tensor(ids_arr), Tensor(position_id))
        hidden = self.blocks.run(emb.asnumpy(), mask, 0)
        top_out, self._k, self._v = self.top.prefill(hidden, position_id, mask)
        eods = np.nonzero(ids_arr[0] == self.config.eod_id)[0]
        self._doc_start = int(eods[-1]) + 1 if eods.size else 0
        return self._logits(top_out)

    def extend(self, ids: Sequence[int], token: int) -> np.ndarray:
        """`ids` ends with `token`, the one new position; logits of that position."""
        if not self.use_past:
            return self.start(ids)
        t = len(ids) - 1
        if t >= self.config.seq_length:
            raise SequenceTooLong(f"position {t} is beyond the trained seq_length {self.config.seq_length}")
        if ids[t - 1] == self.config.eod_id:  # the previous token closed a document
            self._doc_start = t
        position = np.asarray([[t - self._doc_start]], np.int32)
        mask_row = np.zeros((1, 1, t + 1), np.float32)
        mask_row[0, 0, self._doc_start:] = 1.0
        emb, _ = self.embedding(Tensor(np.asarray([[token]], np.int32)), Tensor(position))
        hidden = self.blocks.run(emb.asnumpy(), mask_row, t)
        logits, self._k, self._v = self.top.step(hidden, position, mask_row, self._k, self._v, t, self._word_table())
        return logits.asnumpy().reshape(-1)

    def sibling(self) -> "PanguGenerator":
        """Another generator on the same weights and programs, with its own sessions (concurrent prompts)."""
        other = copy.copy(self)
        other.blocks, other._k, other._v, other._doc_start = None, None, None, 0
        return other

    def close(self) -> None:
        """End the blocks session (frees its caches, locally or at party B)."""
        if self.blocks is not None:
            self.blocks.close()
            self.blocks = None
        self._k = self._v = None
