"""Incremental decoding of PanGu-alpha: per-layer key/value caches of fixed size [L,B,nh,S,d].

A prompt is run once over the whole sequence ("prefill": padded to seq_length S, the keys and
values of every layer kept); each generated token then costs one position ("step"): its key and
value are written into the caches at its column and its query attends to all S columns, the
columns not yet written being masked out. Padding to S keeps every shape fixed, so with
`jit_forward` each of the two programs is compiled once, whatever the prompt length.

The pieces are shared by every layout: centralised generation runs `BlocksDecoder` and
`TopDecoder` in one process; in split generation party B runs `BlocksDecoder` (one
`BlocksSession` per generation session) and party A runs the embedding, `TopDecoder` and the head.
Same programs, same shapes: greedy split generation reproduces centralised generation bit for bit.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
from mindspore import mutable, nn, Tensor

from .pangu_alpha import attention_bias, jit_forward
from .pangu_alpha_config import PanguAlphaConfig

__all__ = ["BlocksDecoder", "TopDecoder", "BlocksSession", "ChainedBlocks", "SequenceTooLong", "pad_rows", "pad_mask",
           "slot_vector", "cache_bytes"]


Caches = Tuple[Tensor, ...]


class SequenceTooLong(ValueError):
    """The sequence would pass the trained seq_length (position embeddings and caches end there)."""


def pad_rows(x: np.ndarray, seq_length: int) -> np.ndarray:
    """[B,n,H] -> [B,S,H], zero rows after the n given ones (masked out everywhere)."""
    out = np.zeros((x.shape[0], seq_length) + tuple(x.shape[2:]), np.float32)
    out[:, :x.shape[1]] = x
    return out


def pad_mask(mask: np.ndarray, seq_length: int) -> np.ndarray:
    """[B,n,m] attention-mask rows (1 = allowed) -> [B,S,S] or, for n == 1, [B,1,S]; zeros elsewhere."""
    rows = seq_length if mask.shape[1] > 1 else 1
    out = np.zeros((mask.shape[0], rows, seq_length), np.float32)
    out[:, :mask.shape[1], :mask.shape[2]] = mask
    return out


def slot_vector(position: int, seq_length: int) -> Tensor:
    """[S,1] one-hot of the column a step writes its key/value into."""
    slot = np.zeros((seq_length, 1), np.float32)
    slot[position, 0] = 1.0
    return Tensor(slot)


def cache_bytes(config: PanguAlphaConfig, layers: int, batch: int = 1) -> int:
    """Bytes of the fp32 key + value caches of `layers` layers for one session."""
    return 2 * layers * batch * config.seq_length * config.hidden_size * 4


class _BlocksPrefill(nn.Cell):
    def __init__(self, blocks: nn.CellList) -> None:
        super().__init__(auto_prefix=False)  # the blocks keep their names (backbone.blocks.<i>.*)
        self.blocks = blocks
        self.count = len(blocks)

    def construct(self, hidden: Tensor, mask: Tensor):
        bias = attention_bias(mask)
        keys, values = (), ()
        for i in range(self.count):
            hidden, k, v = self.blocks[i].forward_kv(hidden, bias)
            keys += (k,)
            values += (v,)
        return hidden, keys, values


class _BlocksStep(nn.Cell):
    def __init__(self, blocks: nn.CellList) -> None:
        super().__init__(auto_prefix=False)
        self.blocks = blocks
        self.count = len(blocks)

    def construct(self, hidden: Tensor, mask_row: Tensor, k_cache: Tuple[Tensor, ...], v_cache: Tuple[Tensor, ...],
                  slot: Tensor):
        bias = attention_bias(mask_row)
        keys, values = (), ()
        for i in range(self.count):
            hidden, k, v = self.blocks[i].step_kv(hidden, bias, k_cache[i], v_cache[i], slot)
            keys += (k,)
            values += (v,)
        return hidden, keys, values


class BlocksDecoder:
    """Prefill/step programs over a stack of transformer blocks (weights shared with `blocks`, which
    are put in inference mode: no dropout)."""

    def __init__(self, blocks: nn.CellList, config: PanguAlphaConfig) -> None:
        if len(blocks) < 1:
            raise ValueError("BlocksDecoder needs at least one block")
        blocks.set_train(False)
        self.config = config
        self.layers = len(blocks)
        self._prefill = jit_forward(_BlocksPrefill(blocks), config.jit_forward)
        self._step = jit_forward(_BlocksStep(blocks), config.jit_forward)
        self._prefill.set_train(False)
        self._step.set_train(False)

    def prefill(self, hidden: np.ndarray, mask: np.ndarray) -> Tuple[np.ndarray, Caches, Caches]:
        """hidden [B,n,H], mask [B,n,n] -> (hidden [B,n,H], key caches, value caches: one [B,nh,S,d] a layer).

        The caches travel as tuples of per-layer tensors: stacking them into one tensor (and slicing
        it again in the next step) costs more than the step's own compute on CPU."""
        s, n = self.config.seq_length, hidden.shape[1]
        out, k, v = self._prefill(Tensor(pad_rows(hidden, s)), Tensor(pad_mask(mask, s)))
        return out.asnumpy()[:, :n], k, v

    def step(self, hidden: np.ndarray, mask_row: np.ndarray, k: Caches, v: Caches,
             position: int) -> Tuple[np.ndarray, Caches, Caches]:
        """hidden [B,1,H] of column `position`, mask_row [B,1,position+1] -> (hidden, caches)."""
        s = self.config.seq_length
        # mutable: a tuple argument is otherwise a constant of the compiled graph (a new one every step)
        out, k, v = self._step(Tensor(np.asarray(hidden, np.float32)), Tensor(pad_mask(mask_row, s)), mutable(k),
                               mutable(v), slot_vector(position, s))
        return out.asnumpy(), k, v


class BlocksSession:
    """One generation session over a `BlocksDecoder`: its caches and the number of positions in them.

    `run(hidden, mask, start)`: start == 0 runs the rows as a new sequence (a prompt, or a whole
    sequence when recomputing without cache); start == length appends one position. Anything
    else, or a sequence longer than seq_length, raises ValueError (SequenceTooLong) naming the numbers.
    """

    def __init__(self, decoder: BlocksDecoder) -> None:
        self.decoder = decoder
        self.length = 0
        self.k: Optional[Caches] = None
        self.v: Optional[Caches] = None

    @property
    def nbytes(self) -> int:
        return 0 if self.k is None else int(sum(t.nbytes for t in self.k + self.v))

    def check(self, hidden_shape: Tuple[int, ...], mask_shape: Tuple[int, ...], start: int) -> None:
        """Validate a request before any work is done (the service calls it on untrusted input)."""
        cfg = self.decoder.config
        if len(hidden_shape) != 3 or hidden_shape[0] != 1 or hidden_shape[2] != cfg.hidden_size or hidden_shape[1] < 1:
            raise ValueError(f"hidden states must be [1, n, {cfg.hidden_size}] with n >= 1, got {list(hidden_shape)}")
        n = hidden_shape[1]
        if start < 0 or start + n > cfg.seq_length:
            raise SequenceTooLong(f"positions {start}..{start + n - 1} are beyond the trained seq_length "
                                  f"{cfg.seq_length} (a sequence holds at most {cfg.seq_length} tokens)")
        if start not in (0, self.length):
            raise ValueError(f"start position {start}: this session holds {self.length} positions "
                             f"(send start 0 to begin a new sequence, or {self.length} to extend it)")
        if start > 0 and n != 1:
            raise ValueError(f"extending a sequence takes one position at a time, got {n}")
        if tuple(mask_shape) != (1, n, start + n):
            raise ValueError(f"attention mask must be [1, {n}, {start + n}] (rows of the new positions over "
                             f"all positions so far), got {list(mask_shape)}")

    def run(self, hidden: np.ndarray, mask: np.ndarray, start: int) -> np.ndarray:
        hidden = np.asarray(hidden, np.float32)
        mask = np.asarray(mask, np.float32)
        self.check(hidden.shape, mask.shape, start)
        if start == 0:
            out, self.k, self.v = self.decoder.prefill(hidden, mask)
        else:
            out, self.k, self.v = self.decoder.step(hidden, mask, self.k, self.v, start)
        self.length = start + hidden.shape[1]
        return out

    def close(self) -> None:
        self.k = self.v = None
        self.length = 0


class ChainedBlocks:
    """Two blocks sessions run one after the other: party A's own first blocks (split point
    `leader_layers` > 0), then party B's. Same interface as `BlocksSession` (`run`, `close`)."""

    def __init__(self, first: Any, then: Any) -> None:
        self.first = first
        self.then = then

    def run(self, hidden: np.ndarray, mask: np.ndarray, start: int) -> np.ndarray:
        return self.then.run(self.first.run(hidden, mask, start), mask, start)

    def close(self) -> None:
        try:
            self.then.close()
        finally:
            self.first.close()


class _TopPrefill(nn.Cell):
    def __init__(self, top: nn.Cell) -> None:
        super().__init__(auto_prefix=False)
        self.top = top  # PanguAlphaBackbone with the "top" part

    def construct(self, hidden: Tensor, position_id: Tensor, mask: Tensor):
        bias = attention_bias(mask)
        query, _ = self.top.top_query_embedding(position_id)
        return self.top.top_query_layer.forward_kv(self.top.layernorm(hidden), query, bias)


class _TopStep(nn.Cell):
    def __init__(self, top: nn.Cell, head: nn.Cell) -> None:
        super().__init__(auto_prefix=False)
        self.top = top
        self.head = head

    def construct(self, hidden: Tensor, position_id: Tensor, mask_row: Tensor, k: Tensor, v: Tensor, slot: Tensor,
                  word_table: Tensor):
        bias = attention_bias(mask_row)
        query, _ = self.top.top_query_embedding(position_id)
        out, k, v = self.top.top_query_layer.step_kv(self.top.layernorm(hidden), query, bias, k, v, slot)
        return self.head(out, word_table), k, v


class TopDecoder:
    """Final LayerNorm + query layer (+ the head in `step`), incrementally: party A's part after the blocks."""

    def __init__(self, top: nn.Cell, head: nn.Cell, config: PanguAlphaConfig) -> None:
        top.set_train(False)
        self.config = config
        self._prefill = jit_forward(_TopPrefill(top), config.jit_forward)
        self._step = jit_forward(_TopStep(top, head), config.jit_forward)  # one compiled call per token
        self._prefill.set_train(False)
        self._step.set_train(False)

    def prefill(self, hidden: np.ndarray, position_id: np.ndarray, mask: np.ndarray):
        """-> (output of the last given position [B,1,H], key cache, value cache)."""
        s, n = self.config.seq_length, hidden.shape[1]
        positions = np.zeros((hidden.shape[0], s), np.int32)
        positions[:, :n] = position_id
        out, k, v = self._prefill(Tensor(pad_rows(hidden, s)), Tensor(positions), Tensor(pad_mask(mask, s)))
        return out[:, n - 1:n], k, v

    def step(self, hidden: np.ndarray, position_id: np.ndarray, mask_row: np.ndarray, k: Tensor, v: Tensor,
             position: int, word_table: Tensor):
        """-> (logits [1,V] of the new position, key cache, value cache)."""
        s = self.config.seq_length
        return self._step(Tensor(np.asarray(hidden, np.float32)), Tensor(np.asarray(position_id, np.int32)),
                          Tensor(pad_mask(mask_row, s)), k, v, slot_vector(position, s), word_table)
