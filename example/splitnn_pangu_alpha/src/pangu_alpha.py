"""PanGu-alpha (SPEC §3): embedding, pre-LN transformer blocks, query layer, tied head, masked loss.

Written so that the three split sub-networks (SPEC §3.1) can be built on their own and still carry
the parameter names of the whole model (ModelZoo layout, e.g.
`backbone.embedding.word_embedding.embedding_table`, `backbone.blocks.0.attention.dense1.weight`,
`backbone.top_query_layer.output.mapping.weight`):

* `PanguAlphaBackbone(config, parts=...)` holds any subset of the parts ("embedding", "blocks",
  "top") as attributes with their canonical names; a wrapper that stores it as `self.backbone`
  reproduces the whole model's names.
* Initial values depend only on (seed, canonical parameter name) (`init_weights`), so a part built
  alone starts from exactly the values the same parameters have in the whole model.
"""
from __future__ import annotations

import contextlib
import logging
import math
import zlib
from collections import OrderedDict
from typing import Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np
import mindspore as ms
from mindspore import nn, ops, Parameter, Tensor
from mindspore.common import dtype as mstype
from mindspore.common.initializer import initializer

from .pangu_alpha_config import PanguAlphaConfig

logger = logging.getLogger(__name__)

__all__ = [
    "MASK_ADDER", "ALL_PARTS", "Linear", "VocabEmbedding", "EmbeddingLayer", "MultiHeadAttention",
    "FeedForward", "TransformerBlock", "QueryLayer", "PanguAlphaBackbone", "PanguAlphaHead",
    "MaskedCrossEntropy", "PanguAlphaModel", "PanguAlphaWithLoss", "attention_bias",
    "split_input_ids", "parameter_shapes", "count_parameters", "init_weights", "canonical_name",
    "copy_parameters_by_name", "parameters_to_numpy", "lazy_parameters",
]

MASK_ADDER = -10000.0
ALL_PARTS = ("embedding", "blocks", "top")

_DTYPES = {"float32": mstype.float32, "float16": mstype.float16, "bfloat16": mstype.bfloat16}
_LAZY = {"active": False}


def jit_forward(cell: nn.Cell, enabled: bool = True) -> nn.Cell:
    """In PyNative mode, compile ``cell``'s forward with ``mindspore.jit``.

    Autodiff then records one compiled graph per call instead of hundreds of small kernels:
    4x faster on CPU for the ``small`` preset (faster than GRAPH_MODE, which re-runs the forward
    inside every gradient call), and FLModel can still keep the tape between forward and backward.
    Not for cells that return a Parameter as an output: MindSpore 2.10 drops the gradient that
    flows back into such an output of a compiled graph.
    """
    if enabled and ms.get_context("mode") == ms.PYNATIVE_MODE:
        cell.construct = ms.jit(cell.construct)
    return cell


def _dtype(name: str):
    return _DTYPES[name]


def _zeros_param(shape: Sequence[int], name: str) -> Parameter:
    """fp32 parameter created through an initializer, so `lazy_parameters()` can skip allocation."""
    return Parameter(initializer("zeros", tuple(int(s) for s in shape), mstype.float32), name=name)


@contextlib.contextmanager
def lazy_parameters() -> Iterator[None]:
    """Build a model without allocating its parameters (shapes only), e.g. to count a 200B model.

    Relies on `mindspore.nn.utils.no_init_parameters` (deprecated upstream but present in 2.10);
    `init_weights` is a no-op inside the block.
    """
    from mindspore.nn.utils import no_init_parameters  # pylint: disable=import-outside-toplevel
    _LAZY["active"] = True
    try:
        with no_init_parameters():
            yield
    finally:
        _LAZY["active"] = False


# ----------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------
class Linear(nn.Cell):
    """y = x W^T + b with W [out, in] (nn.Dense layout); matmul in `compute_dtype`, params fp32."""

    def __init__(self, in_channels: int, out_channels: int, compute_dtype: str = "float32",
                 has_bias: bool = True) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.weight = _zeros_param((out_channels, in_channels), "weight")
        self.has_bias = has_bias
        if has_bias:
            self.bias = _zeros_param((out_channels,), "bias")
        self.matmul = ops.MatMul(transpose_b=True)
        self.dtype = _dtype(compute_dtype)

    def construct(self, x: Tensor) -> Tensor:
        shape = x.shape
        x2 = ops.reshape(ops.cast(x, self.dtype), (-1, shape[-1]))
        y = self.matmul(x2, ops.cast(self.weight, self.dtype))
        if self.has_bias:
            y = y + ops.cast(self.bias, self.dtype)
        return ops.reshape(y, shape[:-1] + (self.out_channels,))


class VocabEmbedding(nn.Cell):
    """Lookup table [num, dim] named `embedding_table`; returns (vectors, table)."""

    def __init__(self, num: int, dim: int) -> None:
        super().__init__()
        self.embedding_table = _zeros_param((num, dim), "embedding_table")
        self.gather = ops.Gather()

    def construct(self, ids: Tensor) -> Tuple[Tensor, Tensor]:
        return self.gather(self.embedding_table, ids, 0), self.embedding_table


def _layernorm(config: PanguAlphaConfig) -> nn.LayerNorm:
    return nn.LayerNorm((config.hidden_size,), begin_norm_axis=-1, begin_params_axis=-1,
                        epsilon=config.layernorm_eps)


def _dropout(rate: float) -> Optional[nn.Cell]:
    return nn.Dropout(p=rate) if rate > 0 else None


class EmbeddingLayer(nn.Cell):
    """Word + position embeddings looked up with explicit position ids, summed, dropout.

    Returns the word table as well: the head reuses it as its (tied) output projection.
    """

    def __init__(self, config: PanguAlphaConfig) -> None:
        super().__init__()
        self.word_embedding = VocabEmbedding(config.vocab_size, config.hidden_size)
        self.position_embedding = VocabEmbedding(config.seq_length, config.hidden_size)
        self.dropout = _dropout(config.dropout_rate)
        self.use_dropout = self.dropout is not None

    def construct(self, input_ids: Tensor, position_ids: Tensor) -> Tuple[Tensor, Tensor]:
        words, word_table = self.word_embedding(input_ids)
        positions, _ = self.position_embedding(position_ids)
        embedding = words + positions
        if self.use_dropout:
            embedding = self.dropout(embedding)
        return embedding, word_table


def attention_bias(attention_mask: Tensor) -> Tensor:
    """[B,S,S] mask with 1 = allowed -> additive bias [B,1,S,S] (0 allowed, -10000 not), fp32."""
    mask = ops.cast(attention_mask, mstype.float32)
    return ops.expand_dims((1.0 - mask) * MASK_ADDER, 1)


class MultiHeadAttention(nn.Cell):
    """Separate Q (dense1) / K (dense2) / V (dense3) / output (projection) projections with bias."""

    def __init__(self, config: PanguAlphaConfig) -> None:
        super().__init__()
        h, cd = config.hidden_size, config.compute_dtype
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.hidden_size = h
        self.dense1 = Linear(h, h, cd)
        self.dense2 = Linear(h, h, cd)
        self.dense3 = Linear(h, h, cd)
        self.projection = Linear(h, h, cd)
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.compute_dtype = _dtype(cd)
        self.softmax_dtype = _dtype(config.softmax_dtype)
        self.bmm = ops.BatchMatMul()
        self.bmm_t = ops.BatchMatMul(transpose_b=True)
        self.softmax = ops.Softmax(axis=-1)
        self.prob_dropout = _dropout(config.dropout_rate)
        self.use_prob_dropout = self.prob_dropout is not None
        self.out_dropout = _dropout(config.dropout_rate)
        self.use_out_dropout = self.out_dropout is not None

    def _heads(self, x: Tensor) -> Tensor:
        b, s, _ = x.shape
        return ops.transpose(ops.reshape(x, (b, s, self.num_heads, self.head_dim)), (0, 2, 1, 3))

    def construct(self, query: Tensor, key_value: Tensor, bias: Tensor) -> Tensor:
        out, _, _ = self.forward_kv(query, key_value, bias)
        return out

    def forward_kv(self, query: Tensor, key_value: Tensor, bias: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Attention over the whole sequence; also returns its keys and values [B,nh,S,d] (the cache)."""
        k = self._heads(self.dense2(key_value))
        v = self._heads(self.dense3(key_value))
        return self._attend(query, k, v, bias), k, v

    def step_kv(self, query: Tensor, key_value: Tensor, bias: Tensor, k_cache: Tensor, v_cache: Tensor,
                slot: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """One new position against fixed-size caches [B,nh,S,d].

        query/key_value [B,1,H]; `slot` [S,1] is 1.0 at the new position's column, 0 elsewhere: its
        key and value are written there (exactly: x*1 + y*0), then the query attends to all S columns,
        the ones not yet written being masked by `bias` [B,1,1,S]. Fixed shapes: compiled once.
        """
        k = self._heads(self.dense2(key_value))
        v = self._heads(self.dense3(key_value))
        k_cache = k_cache * (1.0 - slot) + k * slot
        v_cache = v_cache * (1.0 - slot) + v * slot
        return self._attend(query, k_cache, v_cache, bias), k_cache, v_cache

    def _attend(self, query: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        q = self._heads(self.dense1(query))
        scores = ops.cast(self.bmm_t(q, k), mstype.float32) * self.scale + bias   # [B,nh,Sq,Sk] fp32
        probs = self.softmax(ops.cast(scores, self.softmax_dtype))
        if self.use_prob_dropout:
            probs = self.prob_dropout(probs)
        ctx = self.bmm(ops.cast(probs, self.compute_dtype), v)                    # [B,nh,S,d]
        b, _, s, _ = ctx.shape
        ctx = ops.reshape(ops.transpose(ctx, (0, 2, 1, 3)), (b, s, self.hidden_size))
        out = self.projection(ctx)
        if self.use_out_dropout:
            out = self.out_dropout(out)
        return out


class FeedForward(nn.Cell):
    """mapping H->F, gelu, projection F->H, dropout."""

    def __init__(self, config: PanguAlphaConfig) -> None:
        super().__init__()
        self.mapping = Linear(config.hidden_size, config.ffn_hidden_size, config.compute_dtype)
        self.projection = Linear(config.ffn_hidden_size, config.hidden_size, config.compute_dtype)
        self.act = config.hidden_act
        self.dropout = _dropout(config.dropout_rate)
        self.use_dropout = self.dropout is not None

    def construct(self, x: Tensor) -> Tensor:
        h = self.mapping(x)
        if self.act == "fast_gelu":
            h = ops.fast_gelu(h)
        elif self.act == "gelu_tanh":
            h = ops.gelu(h, approximate="tanh")
        else:
            h = ops.gelu(h, approximate="none")
        out = self.projection(h)
        if self.use_dropout:
            out = self.dropout(out)
        return out


class TransformerBlock(nn.Cell):
    """Pre-LN block: x + Attn(LN1 x), then x + FFN(LN2 x). Residual stream kept in fp32."""

    def __init__(self, config: PanguAlphaConfig) -> None:
        super().__init__()
        self.layernorm1 = _layernorm(config)
        self.layernorm2 = _layernorm(config)
        self.attention = MultiHeadAttention(config)
        self.output = FeedForward(config)

    def construct(self, x: Tensor, bias: Tensor) -> Tensor:
        h = self.layernorm1(x)
        x = x + ops.cast(self.attention(h, h, bias), mstype.float32)
        x = x + ops.cast(self.output(self.layernorm2(x)), mstype.float32)
        return x

    def _finish(self, x: Tensor, attended: Tensor) -> Tensor:
        x = x + ops.cast(attended, mstype.float32)
        return x + ops.cast(self.output(self.layernorm2(x)), mstype.float32)

    def forward_kv(self, x: Tensor, bias: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """`construct` that also returns the layer's keys and values (incremental decoding)."""
        h = self.layernorm1(x)
        attended, k, v = self.attention.forward_kv(h, h, bias)
        return self._finish(x, attended), k, v

    def step_kv(self, x: Tensor, bias: Tensor, k_cache: Tensor, v_cache: Tensor,
                slot: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """One new position x [B,1,H] with this layer's caches (see MultiHeadAttention.step_kv)."""
        h = self.layernorm1(x)
        attended, k_cache, v_cache = self.attention.step_kv(h, h, bias, k_cache, v_cache, slot)
        return self._finish(x, attended), k_cache, v_cache


class QueryLayer(TransformerBlock):
    """Last layer: queries from the (not layer-normed) top_query_embedding, keys/values from LN1(x)."""

    def construct(self, x: Tensor, query_vector: Tensor, bias: Tensor) -> Tensor:  # pylint: disable=arguments-differ
        h = self.layernorm1(x)
        x = x + ops.cast(self.attention(query_vector, h, bias), mstype.float32)
        x = x + ops.cast(self.output(self.layernorm2(x)), mstype.float32)
        return x

    def forward_kv(self, x: Tensor, query_vector: Tensor, bias: Tensor  # pylint: disable=arguments-differ
                   ) -> Tuple[Tensor, Tensor, Tensor]:
        h = self.layernorm1(x)
        attended, k, v = self.attention.forward_kv(query_vector, h, bias)
        return self._finish(x, attended), k, v

    def step_kv(self, x: Tensor, query_vector: Tensor, bias: Tensor, k_cache: Tensor,  # pylint: disable=arguments-differ
                v_cache: Tensor, slot: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        h = self.layernorm1(x)
        attended, k_cache, v_cache = self.attention.step_kv(query_vector, h, bias, k_cache, v_cache, slot)
        return self._finish(x, attended), k_cache, v_cache


class PanguAlphaBackbone(nn.Cell):
    """Embedding -> blocks -> final LayerNorm -> query layer, or any subset of these parts.

    parts: "embedding" (party A), "blocks" (party B), "top" (party A: final LN, top_query_embedding,
    top_query_layer). Methods `embed`, `run_blocks`, `run_top` run one part each; `construct` runs all.
    Weights are initialised by canonical name `backbone.<path>` (see `init_weights`), unless
    `init=False` or inside `lazy_parameters()`.
    """

    def __init__(self, config: PanguAlphaConfig, parts: Iterable[str] = ALL_PARTS, init: bool = True) -> None:
        super().__init__()
        parts = tuple(parts)
        unknown = [p for p in parts if p not in ALL_PARTS]
        if unknown or not parts:
            raise ValueError(f"parts must be a non-empty subset of {ALL_PARTS}, got {parts}")
        self.config = config
        self.parts = parts
        if "embedding" in parts:
            self.embedding = EmbeddingLayer(config)
        if "blocks" in parts:
            self.blocks = nn.CellList([TransformerBlock(config) for _ in range(config.num_blocks)])
        if "top" in parts:
            self.layernorm = _layernorm(config)
            self.top_query_embedding = VocabEmbedding(config.seq_length, config.hidden_size)
            self.top_query_layer = QueryLayer(config)
        self.num_blocks = config.num_blocks
        if init:
            init_weights(self, config.param_init_seed, config.param_init_std, prefix="backbone.")

    def embed(self, input_ids: Tensor, position_id: Tensor) -> Tuple[Tensor, Tensor]:
        """tokens [B,S] int32, positions [B,S] -> (embedding [B,S,H] fp32, word_table [V,H])."""
        return self.embedding(input_ids, position_id)

    def run_blocks(self, hidden_states: Tensor, attention_mask: Tensor) -> Tensor:
        """The num_layers-1 ordinary blocks; attention_mask [B,S,S] with 1 = allowed."""
        bias = attention_bias(attention_mask)
        for i in range(self.num_blocks):
            hidden_states = self.blocks[i](hidden_states, bias)
        return hidden_states

    def run_top(self, hidden_states: Tensor, position_id: Tensor, attention_mask: Tensor) -> Tensor:
        """Final LayerNorm, then the query layer fed with top_query_embedding[position_id]."""
        bias = attention_bias(attention_mask)
        h = self.layernorm(hidden_states)
        query, _ = self.top_query_embedding(position_id)
        return self.top_query_layer(h, query, bias)

    def construct(self, input_ids: Tensor, position_id: Tensor, attention_mask: Tensor) -> Tuple[Tensor, Tensor]:
        embedding, word_table = self.embed(input_ids, position_id)
        hidden = self.run_blocks(embedding, attention_mask)
        return self.run_top(hidden, position_id, attention_mask), word_table


class PanguAlphaHead(nn.Cell):
    """Tied output projection: logits = h . word_table^T (no bias), returned fp32 as [B*S, V]."""

    def __init__(self, config: PanguAlphaConfig) -> None:
        super().__init__()
        self.hidden_size = config.hidden_size
        self.compute_dtype = _dtype(config.compute_dtype)
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, hidden_states: Tensor, word_table: Tensor) -> Tensor:
        h = ops.reshape(ops.cast(hidden_states, self.compute_dtype), (-1, self.hidden_size))
        logits = self.matmul(h, ops.cast(word_table, self.compute_dtype))
        return ops.cast(logits, mstype.float32)


class MaskedCrossEntropy(nn.Cell):
    """fp32 cross-entropy averaged over unmasked tokens: sum(loss*mask) / (sum(mask) + 1e-5)."""

    def construct(self, logits: Tensor, labels: Tensor, input_mask: Tensor) -> Tensor:
        logits = ops.cast(logits, mstype.float32)
        labels = ops.reshape(labels, (-1,))
        mask = ops.reshape(ops.cast(input_mask, mstype.float32), (-1,))
        logp = ops.log_softmax(logits, -1)
        picked = ops.gather_elements(logp, 1, ops.expand_dims(ops.cast(labels, mstype.int32), 1))
        loss = -ops.reshape(picked, (-1,))
        return ops.reduce_sum(loss * mask) / (ops.reduce_sum(mask) + 1e-5)


def split_input_ids(input_ids: Tensor, eod_id: int) -> Tuple[Tensor, Tensor, Tensor]:
    """ids [B,S+1] -> tokens ids[:, :-1], labels ids[:, 1:], input_mask float (token != eod)."""
    seq = input_ids.shape[1] - 1
    tokens = input_ids[:, :seq]
    labels = input_ids[:, 1:]
    input_mask = ops.cast(ops.not_equal(tokens, eod_id), mstype.float32)
    return tokens, labels, input_mask


class PanguAlphaModel(nn.Cell):
    """Backbone + head: (tokens [B,S], position_id, attention_mask) -> logits [B*S, V] fp32."""

    def __init__(self, config: PanguAlphaConfig, init: bool = True) -> None:
        super().__init__()
        self.config = config
        self.backbone = PanguAlphaBackbone(config, ALL_PARTS, init=init)
        self.head = PanguAlphaHead(config)

    def construct(self, tokens: Tensor, position_id: Tensor, attention_mask: Tensor) -> Tensor:
        hidden, word_table = self.backbone(tokens, position_id, attention_mask)
        return self.head(hidden, word_table)


class PanguAlphaWithLoss(nn.Cell):
    """(input_ids [B,S+1], position_id [B,S], attention_mask [B,S,S]) -> scalar loss.

    auto_prefix=False keeps the parameter names of the inner model (`backbone.*`).
    Attributes: `network` (PanguAlphaModel), `backbone` / `head` (the same cells, for convenience).
    """

    def __init__(self, config: PanguAlphaConfig, init: bool = True) -> None:
        super().__init__(auto_prefix=False)
        self.config = config
        self.network = PanguAlphaModel(config, init=init)
        self.loss = MaskedCrossEntropy()
        self.eod_id = config.eod_id
        jit_forward(self, config.jit_forward)

    @property
    def backbone(self) -> PanguAlphaBackbone:
        return self.network.backbone

    @property
    def head(self) -> PanguAlphaHead:
        return self.network.head

    def construct(self, input_ids: Tensor, position_id: Tensor, attention_mask: Tensor) -> Tensor:
        tokens, labels, input_mask = split_input_ids(input_ids, self.eod_id)
        logits = self.network(tokens, position_id, attention_mask)
        return self.loss(logits, labels, input_mask)


# ----------------------------------------------------------------------------------------------
# shapes, init, parameter utilities
# ----------------------------------------------------------------------------------------------
def _block_shapes(prefix: str, h: int, f: int) -> "OrderedDict[str, Tuple[int, ...]]":
    out: "OrderedDict[str, Tuple[int, ...]]" = OrderedDict()
    for ln in ("layernorm1", "layernorm2"):
        out[f"{prefix}{ln}.gamma"] = (h,)
        out[f"{prefix}{ln}.beta"] = (h,)
    for d in ("dense1", "dense2", "dense3", "projection"):
        out[f"{prefix}attention.{d}.weight"] = (h, h)
        out[f"{prefix}attention.{d}.bias"] = (h,)
    out[f"{prefix}output.mapping.weight"] = (f, h)
    out[f"{prefix}output.mapping.bias"] = (f,)
    out[f"{prefix}output.projection.weight"] = (h, f)
    out[f"{prefix}output.projection.bias"] = (h,)
    return out


def parameter_shapes(config: PanguAlphaConfig, parts: Iterable[str] = ALL_PARTS) -> "OrderedDict[str, Tuple[int, ...]]":
    """Declared name -> shape of every parameter, without building anything (tests check the model
    against it; benchmarks use it to size the big presets)."""
    v, s, h, f = config.vocab_size, config.seq_length, config.hidden_size, config.ffn_hidden_size
    parts = tuple(parts)
    out: "OrderedDict[str, Tuple[int, ...]]" = OrderedDict()
    if "embedding" in parts:
        out["backbone.embedding.word_embedding.embedding_table"] = (v, h)
        out["backbone.embedding.position_embedding.embedding_table"] = (s, h)
    if "blocks" in parts:
        for i in range(config.num_blocks):
            out.update(_block_shapes(f"backbone.blocks.{i}.", h, f))
    if "top" in parts:
        out["backbone.layernorm.gamma"] = (h,)
        out["backbone.layernorm.beta"] = (h,)
        out["backbone.top_query_embedding.embedding_table"] = (s, h)
        out.update(_block_shapes("backbone.top_query_layer.", h, f))
    return out


def count_parameters(cell: nn.Cell) -> int:
    """Number of trainable scalars of a cell (works on lazily built cells: shapes only)."""
    return int(sum(int(np.prod(p.shape)) for p in cell.trainable_params()))


def canonical_name(name: str) -> str:
    """Strip wrapper prefixes: everything before the first `backbone.` (names are ModelZoo-style)."""
    idx = name.find("backbone.")
    return name[idx:] if idx > 0 else name


def _initial_value(name: str, shape: Tuple[int, ...], seed: int, std: float) -> np.ndarray:
    """Deterministic initial value of parameter `name`: depends on (seed, name, shape) only."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "gamma":
        return np.ones(shape, np.float32)
    if leaf in ("beta", "bias"):
        return np.zeros(shape, np.float32)
    rng = np.random.RandomState(zlib.crc32(f"{seed}/{name}".encode("utf-8")) & 0x7FFFFFFF)
    return (rng.standard_normal(shape) * std).astype(np.float32)


def init_weights(cell: nn.Cell, seed: int, std: float = 0.02, prefix: str = "",
                 name_fn: Callable[[str], str] = canonical_name) -> None:
    """Set every parameter of `cell` from (seed, canonical name): N(0, std) for weights and
    embedding tables, 1 for LayerNorm gamma, 0 for beta and biases.

    The key of a parameter is `name_fn(prefix + <its path inside cell>)`, so the same parameter gets
    the same value whether it sits in the whole model or in a split sub-network.
    """
    if _LAZY["active"]:
        return
    for path, param in cell.parameters_and_names():
        key = name_fn(prefix + path)
        param.set_data(Tensor(_initial_value(key, tuple(param.shape), seed, std)))


def parameters_to_numpy(cell: nn.Cell) -> "OrderedDict[str, np.ndarray]":
    """name -> numpy copy of every parameter (names as stored in checkpoints)."""
    return OrderedDict((p.name, p.asnumpy().copy()) for p in cell.get_parameters())


def copy_parameters_by_name(src: nn.Cell, dst: nn.Cell, strict: bool = False,
                            name_fn: Callable[[str], str] = canonical_name) -> list:
    """Copy values from `src` into the parameters of `dst` with the same canonical name.

    Returns the names copied. With strict=True every parameter of `dst` must be found in `src`.
    Shapes must agree.
    """
    source: Dict[str, Parameter] = {name_fn(p.name): p for p in src.get_parameters()}
    copied, missing = [], []
    for p in dst.get_parameters():
        key = name_fn(p.name)
        if key not in source:
            missing.append(p.name)
            continue
        value = source[key]
        if tuple(value.shape) != tuple(p.shape):
            raise ValueError(f"shape mismatch for {p.name}: {tuple(value.shape)} vs {tuple(p.shape)}")
        p.set_data(Tensor(value.asnumpy().copy()))
        copied.append(p.name)
    if strict and missing:
        raise KeyError(f"parameters not found in source: {missing}")
    return copied
