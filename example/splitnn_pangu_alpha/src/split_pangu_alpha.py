"""PanGu-alpha cut into the three sub-networks of the split example (SPEC §3.1), and its optimizer.

Party A (leader, data owner) runs `EmbeddingLossNet` and `HeadLossNet`; party B (follower,
computation centre) runs `BackboneLossNet`. Every net keeps its part of `PanguAlphaBackbone` as
`self.backbone`, so parameter names (and, through `init_weights`, initial values) are exactly
those of the whole model (`backbone.embedding.*`, `backbone.blocks.<i>.*`, `backbone.layernorm.*`,
`backbone.top_query_*`). That is what lets the tests compare split and centralised weights by name.

`PanguAlphaAdam` is the user optimizer of each FLModel. It splits the PanGu update in two, because
in split learning one party cannot decide alone:

1. `apply_gradients(grads)` (called by FLModel with the parameter gradients of the loss scaled by
   the current loss scale) unscales them and computes this party's squared norm and overflow flag;
2. after the parties exchanged those scalars, `step(global_norm, overflow)` clips with the global
   norm, applies AdamWeightDecay unless the step overflowed, and updates the loss scale.

`__call__(*inputs, sens=sens)` is the SPEC §2.2 user-optimizer contract: it computes the gradients
itself (from the yaml gradient terms of its `opts` entry) and then calls `apply_gradients`.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import mindspore as ms
from mindspore import nn, ops, Parameter, Tensor
from mindspore.common import dtype as mstype

from .optim import PanguOptimizer, local_grad_stats
from .pangu_alpha import (MaskedCrossEntropy, PanguAlphaBackbone, PanguAlphaHead, jit_forward, parameter_shapes,
                          split_input_ids)
from .pangu_alpha_config import PanguAlphaConfig

logger = logging.getLogger(__name__)

__all__ = ["EmbeddingLossNet", "BackboneLossNet", "HeadLossNet", "HeadEvalNet", "PanguAlphaAdam",
           "PerplexityMetric", "YAML_DIR", "yaml_path", "config_fingerprint", "FINGERPRINT_FIELDS", "norm_groups",
           "stage_blocks", "stage_fingerprint"]

YAML_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "yaml")


def yaml_path(name: str) -> str:
    """Path of one of the example's party descriptions: embedding, backbone or head."""
    path = os.path.join(YAML_DIR, f"{name}.yaml")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"party yaml not found: {path}")
    return path


# ----------------------------------------------------------------------------------------------
# sub-networks
# ----------------------------------------------------------------------------------------------
class EmbeddingLossNet(nn.Cell):
    """Party A, first sub-network: (input_ids [B,S+1], position_id, attention_mask) ->
    (embedding_table [B,S,H], word_table [V,H], position_id, attention_mask).

    With `config.leader_layers = k > 0` A also runs the first k transformer blocks here, and
    `embedding_table` (the tensor sent to party B, name kept so yamls and protocol stay the same)
    holds their output: what B receives then depends on each token's context, not on the token
    alone. The word table is returned so the head can use it as its tied output projection; the
    position ids and the mask pass through so the yaml can route them (mask to B, ids to the head).
    """

    def __init__(self, config: PanguAlphaConfig) -> None:
        super().__init__()
        self.leader_layers = int(config.leader_layers)
        parts = ("embedding", "blocks") if self.leader_layers else ("embedding",)
        self.backbone = PanguAlphaBackbone(config, parts=parts, block_range=(0, self.leader_layers))
        self.seq_length = config.seq_length
        # The net itself is not jit-compiled: a compiled graph that returns a Parameter (the word
        # table) drops the gradient flowing back into that output in MindSpore 2.10. A's blocks are.
        self._run_blocks = self.backbone.run_blocks
        if self.leader_layers and config.jit_forward and ms.get_context("mode") == ms.PYNATIVE_MODE:
            self._run_blocks = ms.jit(self.backbone.run_blocks)

    def construct(self, input_ids: Tensor, position_id: Tensor, attention_mask: Tensor):
        tokens = input_ids[:, :self.seq_length]
        embedding, word_table = self.backbone.embed(tokens, position_id)
        if self.leader_layers:
            embedding = self._run_blocks(embedding, attention_mask)
        return embedding, word_table, position_id, attention_mask


class BackboneLossNet(nn.Cell):
    """Party B: the transformer blocks after A's `config.leader_layers` (all num_layers - 1 of them
    by default). (embedding_table, attention_mask) -> hidden_states.

    A pipeline stage (`stage_blocks`) holds `block_range` only; a stage with a stage after it also
    returns the mask, which that stage needs too: -> (hidden_states, attention_mask).
    """

    def __init__(self, config: PanguAlphaConfig, block_range: Optional[Tuple[int, int]] = None,
                 pass_mask: bool = False) -> None:
        super().__init__()
        self.backbone = PanguAlphaBackbone(config, parts=("blocks",), block_range=block_range or (
            int(config.leader_layers), config.num_blocks))
        self.pass_mask = pass_mask
        jit_forward(self, config.jit_forward)

    def construct(self, embedding_table: Tensor, attention_mask: Tensor):
        hidden_states = self.backbone.run_blocks(embedding_table, attention_mask)
        if self.pass_mask:
            return hidden_states, attention_mask
        return hidden_states


def stage_blocks(config: PanguAlphaConfig, stages: int, index: int) -> Tuple[int, int]:
    """Blocks [start, stop) of pipeline stage `index` of `stages`: party B's blocks (those after A's
    `leader_layers`) split as evenly as possible, the first stages taking one more when they do
    not divide evenly (5 blocks over 2 stages: 3 + 2)."""
    first, total = int(config.leader_layers), config.num_blocks - int(config.leader_layers)
    if not 1 <= stages <= total:
        raise ValueError(f"--pipeline_stages {stages}: party B's {total} transformer block(s) (num_layers="
                         f"{config.num_layers} minus the query layer, minus --leader_layers {config.leader_layers}) "
                         f"allow 1 to {total} stages, each holding at least one block")
    if not 0 <= index < stages:
        raise ValueError(f"--stage_index {index}: stages are numbered 0 to {stages - 1} (--pipeline_stages {stages})")
    size, extra = divmod(total, stages)
    start = first + index * size + min(index, extra)
    return start, start + size + (1 if index < extra else 0)


class HeadLossNet(nn.Cell):
    """Party A, last sub-network: final LayerNorm, query layer, tied projection, masked loss.

    (hidden_states, input_ids, word_table, position_id, attention_mask) -> loss (scalar).
    """

    def __init__(self, config: PanguAlphaConfig) -> None:
        super().__init__()
        self.backbone = PanguAlphaBackbone(config, parts=("top",))
        self.head = PanguAlphaHead(config)
        self.loss = MaskedCrossEntropy()
        self.eod_id = config.eod_id
        jit_forward(self, config.jit_forward)

    def logits(self, hidden_states: Tensor, input_ids: Tensor, word_table: Tensor, position_id: Tensor,
               attention_mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        _, labels, input_mask = split_input_ids(input_ids, self.eod_id)
        top = self.backbone.run_top(hidden_states, position_id, attention_mask)
        return self.head(top, word_table), labels, input_mask

    def construct(self, hidden_states: Tensor, input_ids: Tensor, word_table: Tensor, position_id: Tensor,
                  attention_mask: Tensor) -> Tensor:
        logits, labels, input_mask = self.logits(hidden_states, input_ids, word_table, position_id,
                                                 attention_mask)
        return self.loss(logits, labels, input_mask)


class HeadEvalNet(nn.Cell):
    """Eval net of the head (shares the train net's cells): outputs (loss, scored token count)."""

    def __init__(self, train_net: HeadLossNet) -> None:
        super().__init__(auto_prefix=False)  # keep the train net's parameter names
        self.net = train_net

    def construct(self, hidden_states: Tensor, input_ids: Tensor, word_table: Tensor, position_id: Tensor,
                  attention_mask: Tensor) -> Tuple[Tensor, Tensor]:
        logits, labels, input_mask = self.net.logits(hidden_states, input_ids, word_table, position_id,
                                                     attention_mask)
        return self.net.loss(logits, labels, input_mask), ops.reduce_sum(input_mask)


class PerplexityMetric:
    """Token-weighted mean loss and perplexity; fed by FLModel.eval_one_step with (loss, tokens)."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.total = 0.0
        self.tokens = 0

    def update(self, loss: Tensor, tokens: Tensor, *_: Any) -> None:
        n = int(round(float(np.asarray(tokens.asnumpy()))))
        self.total += float(np.asarray(loss.asnumpy())) * n
        self.tokens += n

    def eval(self) -> Tuple[float, float]:
        """(mean loss, perplexity); same formula as train_centralized.evaluate."""
        if self.tokens == 0:
            raise ValueError("evaluation data has no scored token")
        mean = self.total / self.tokens
        return mean, float(math.exp(min(mean, 700.0)))


# ----------------------------------------------------------------------------------------------
# the settings both parties must share (startup handshake)
# ----------------------------------------------------------------------------------------------
FINGERPRINT_FIELDS = ("vocab_size", "seq_length", "hidden_size", "num_heads", "num_layers", "ffn_hidden_size",
                      "batch_size", "dropout_rate", "param_init_seed", "eod_id", "compute_dtype", "hidden_act",
                      "start_lr", "end_lr", "weight_decay", "loss_scale", "loss_scale_window", "clip_norm",
                      "leader_layers")


def config_fingerprint(config: PanguAlphaConfig, unknown: Sequence[str] = ()) -> Dict[str, Any]:
    """{setting: value} of the model/optimizer settings both parties must share, for the handshake
    (`mindspore_federated.protocol.PeerSession.handshake`).

    Settings in `unknown` are None and not compared: the follower, which holds no data, need not be
    told the vocabulary size or the EOD id (its blocks do not depend on them).
    """
    return {name: None if name in unknown else getattr(config, name) for name in FINGERPRINT_FIELDS}


def norm_groups(config: PanguAlphaConfig) -> List[List[str]]:
    """Parameter names of the split's optimizers, in the order the decision adds their squared
    gradient norms: A's head, A's embedding (with its `leader_layers` blocks), B's blocks.

    Centralised training given these (`PanguTrainOneStepCell(norm_groups=...)`) rounds the global
    norm exactly like the split run, so the two loss curves stay bit-identical.
    """
    def blocks(first: int, last: int) -> List[str]:
        return [name for i in range(first, last)
                for name in parameter_shapes(config, ("blocks",)) if name.startswith(f"backbone.blocks.{i}.")]

    k = int(config.leader_layers)
    return [list(parameter_shapes(config, ("top",))),
            list(parameter_shapes(config, ("embedding",))) + blocks(0, k),
            blocks(k, config.num_blocks)]


def stage_fingerprint(config: PanguAlphaConfig, stages: int, downstream_index: int) -> Dict[str, Any]:
    """The handshake settings between pipeline stage `downstream_index - 1` and stage
    `downstream_index`: the model's, the number of stages and the blocks the downstream stage
    holds, so that stages started with different splits refuse each other at startup."""
    start, stop = stage_blocks(config, stages, downstream_index)
    return dict(config_fingerprint(config, unknown=("vocab_size", "eod_id")), pipeline_stages=stages,
                stage_blocks=f"{start}-{stop - 1}")


# ----------------------------------------------------------------------------------------------
# optimizer
# ----------------------------------------------------------------------------------------------
_hyper_map = ops.HyperMap()
_store = ops.Assign()


class _GraphPending(nn.Cell):
    """GRAPH_MODE: the unscaled gradients, squared norm and overflow flag between the two halves
    of a step, as Parameters, so that FLModel's compiled backward can store them (kept outside
    the optimizer's Cell tree: they are not part of its checkpointed state)."""

    def __init__(self, params: Sequence[Parameter]) -> None:
        super().__init__(auto_prefix=False)
        self.grads = ms.ParameterTuple([Parameter(ops.zeros_like(p), name=f"pending_grad.{p.name}",
                                                  requires_grad=False) for p in params])
        self.sq_norm = Parameter(Tensor(np.zeros((), np.float32)), name="pending_sq_norm", requires_grad=False)
        self.overflow = Parameter(Tensor(np.zeros((), np.bool_)), name="pending_overflow", requires_grad=False)
        self.fresh = Parameter(Tensor(np.zeros((), np.bool_)), name="pending_fresh", requires_grad=False)


class _GraphStep(nn.Cell):
    """GRAPH_MODE: the second half of a step on the stored gradients."""

    def __init__(self, optimizer: PanguOptimizer, pending: _GraphPending) -> None:
        super().__init__(auto_prefix=False)
        self.optimizer = optimizer
        self.pending = pending

    def construct(self, global_norm: Tensor, overflow: Tensor) -> Tensor:
        return self.optimizer(self.pending.grads, global_norm, overflow)


class PanguAlphaAdam(nn.Cell):
    """One party's PanGu-alpha optimizer (FP32-state AdamWeightDecay, weight-decay groups,
    warmup+cosine LR, dynamic loss scale with overflow skip, global-norm clip), split in two halves
    so the parties can agree on ONE global norm and ONE overflow decision per step.

    Args:
        network: the party's train net (only used by `__call__`, which differentiates it itself).
        yaml_data: the party's FLYamlData; `opt_index` selects the `opts` entry this optimizer
            serves (its `params` filters pick the parameters, its `grads` terms the sensitivities).
        config: model config; `start_lr`, `end_lr`, `weight_decay`, `loss_scale`,
            `loss_scale_window`, `clip_norm` come from it.
        warmup_steps / decay_steps: the LR schedule, identical on every party.

    Protocol used by FLModel: `parameters` (order of the gradients) and `apply_gradients(grads)`.
    The state (Adam moments, optimizer step, loss scale) is made of Parameters of this Cell, so
    FLModel.save_ckpt stores it and load_ckpt('train') restores it.
    """

    def __init__(self, network: nn.Cell, yaml_data: Any, config: PanguAlphaConfig, warmup_steps: int,
                 decay_steps: int, opt_index: int = 0) -> None:
        super().__init__(auto_prefix=False)  # never rename the network's parameters
        if not 0 <= opt_index < len(yaml_data.opts):
            raise ValueError(f"opt_index {opt_index}: the yaml declares {len(yaml_data.opts)} opts entries")
        # kept outside the Cell tree: the optimizer's checkpoint entries are its own state only
        object.__setattr__(self, "_network", network)
        object.__setattr__(self, "_spec", yaml_data.opts[opt_index])
        object.__setattr__(self, "_output_names", list(yaml_data.train_net.output_names))
        filters = list(self._spec.params)
        params = [p for p in network.trainable_params()
                  if not filters or any(f in p.name for f in filters)]
        if not params:
            raise ValueError(f"opts[{opt_index}].params {filters} match no trainable parameter of "
                             f"{type(network).__name__}")
        self.optimizer = PanguOptimizer(params, start_lr=config.start_lr, end_lr=config.end_lr,
                                        warmup_steps=warmup_steps, decay_steps=decay_steps,
                                        weight_decay=config.weight_decay, loss_scale=config.loss_scale,
                                        loss_scale_window=config.loss_scale_window, clip_norm=config.clip_norm)
        self.parameters = self.optimizer.parameters
        graph = ms.get_context("mode") == ms.GRAPH_MODE
        object.__setattr__(self, "_graph", _GraphPending(params) if graph else None)
        object.__setattr__(self, "_graph_step", _GraphStep(self.optimizer, self._graph) if graph else None)
        object.__setattr__(self, "_pending", None)
        object.__setattr__(self, "sq_norm", None)
        object.__setattr__(self, "overflow", None)

    # ---- state shared with the peer
    @property
    def loss_scale(self) -> Parameter:
        """Current dynamic loss scale (a Parameter; read it before the step's backward)."""
        return self.optimizer.get_loss_scale()

    def loss_scale_value(self) -> float:
        return float(self.optimizer.get_loss_scale().asnumpy())

    def current_lr(self) -> float:
        return self.optimizer.current_lr()

    def applied_updates(self) -> int:
        return int(np.asarray(self.optimizer.global_step.asnumpy()).reshape(-1)[0])

    # ---- first half: local gradients -> local scalars
    def apply_gradients(self, grads: Sequence[Tensor]) -> None:
        """Take the gradients of (loss * loss_scale), ordered like `parameters`; unscale, compute the
        local squared norm and overflow flag, and keep them until `step`."""
        grads = tuple(grads)
        if len(grads) != len(self.parameters):
            raise ValueError(f"apply_gradients: got {len(grads)} gradients for {len(self.parameters)} parameters")
        if self._graph is not None:
            nn.Cell.__call__(self, ms.mutable(grads))  # construct: one graph, not one op per tensor
            return
        scale = ops.cast(self.optimizer.get_loss_scale(), mstype.float32) * 1.0
        unscaled, sq_norm, overflow = local_grad_stats(grads, scale)
        object.__setattr__(self, "_pending", unscaled)
        object.__setattr__(self, "sq_norm", sq_norm)
        object.__setattr__(self, "overflow", overflow)

    def local_scalars(self) -> Tuple[float, bool]:
        """(squared norm, overflow) of the pending gradients, as Python numbers."""
        if not self._has_pending():
            raise RuntimeError("local_scalars: no gradients pending (apply_gradients was not called this step)")
        if self._graph is not None:
            return float(self._graph.sq_norm.asnumpy()), bool(self._graph.overflow.asnumpy())
        return float(self.sq_norm.asnumpy()), bool(self.overflow.asnumpy())

    def _has_pending(self) -> bool:
        if self._graph is not None:
            return bool(self._graph.fresh.asnumpy())
        return self._pending is not None

    # ---- second half: the agreed decision
    def step(self, global_norm: Any, overflow: Any) -> None:
        """Clip with the global norm, AdamWeightDecay unless overflow, loss-scale update."""
        if not self._has_pending():
            raise RuntimeError("step: no gradients pending; apply_gradients must run first in each step")
        norm = Tensor(np.asarray(global_norm, np.float32).reshape(()))
        flag = Tensor(np.asarray(bool(np.asarray(overflow).reshape(-1)[0]) if np.ndim(overflow) else bool(overflow)))
        if self._graph is not None:
            self._graph_step(norm, flag)
            self._graph.fresh.set_data(Tensor(np.zeros((), np.bool_)))
            return
        # mutable: in graph mode a plain tuple of tensors would be a compile-time constant
        # (one recompilation per step)
        self.optimizer(ms.mutable(tuple(self._pending)), norm, flag)
        object.__setattr__(self, "_pending", None)

    # ---- SPEC §2.2 contract: opt(*inputs, sens=sens)
    def _term_sens(self, term: Any, out: Tensor, sens: Mapping[str, Mapping[str, Any]]) -> Tensor:
        if term.sens is None:
            return ops.ones_like(out)
        if isinstance(term.sens, float):
            return ops.full_like(out, term.sens)
        try:
            value = sens[term.sens][term.output]
        except (KeyError, TypeError):
            raise ValueError(f"{term.path}.sens: no tensor sens[{term.sens!r}][{term.output!r}] in the "
                             f"sens dict (tags: {', '.join(map(str, sens or {})) or 'none'})") from None
        value = value if isinstance(value, Tensor) else Tensor(np.asarray(value))
        return value.astype(out.dtype) if value.dtype != out.dtype else value

    def __call__(self, *inputs: Tensor, sens: Optional[Mapping[str, Mapping[str, Any]]] = None) -> None:
        """Differentiate the network for this optimizer's yaml terms, then `apply_gradients`.

        Used when FLModel calls user optimizers as `opt(*inputs, sens=sens)` instead of feeding
        them gradients; costs one extra forward pass.
        """
        sens = sens or {}
        outputs, vjp_fn = ms.vjp(self._network, *inputs, weights=list(self.parameters))
        outs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        sens_list: List[Any] = [None] * len(outs)
        for term in self._spec.grads:
            i = self._output_names.index(term.output)
            value = self._term_sens(term, outs[i], sens)
            sens_list[i] = value if sens_list[i] is None else sens_list[i] + value
        sens_list = [ops.zeros_like(o) if s is None else s for s, o in zip(sens_list, outs)]
        _, weight_grads = vjp_fn(tuple(sens_list) if isinstance(outputs, (tuple, list)) else sens_list[0])
        self.apply_gradients(weight_grads)

    def construct(self, grads: Tuple[Tensor, ...]) -> Tensor:
        """GRAPH_MODE first half, run inside FLModel's compiled backward (or by apply_gradients):
        unscale, local squared norm and overflow flag, stored until `step`."""
        scale = ops.cast(self.optimizer.get_loss_scale(), mstype.float32) * 1.0
        unscaled, sq_norm, overflow = local_grad_stats(grads, scale)
        pending = self._graph
        # one HyperMap, not a loop: a loop over every parameter unrolls into nested calls and passes
        # MindSpore's call-depth limit (1000) from about 15 blocks on (every preset from 350M up)
        stored = _hyper_map(_store, pending.grads, unscaled)
        sq_norm = ops.depend(sq_norm, stored)
        ops.assign(pending.sq_norm, sq_norm)
        ops.assign(pending.overflow, overflow)
        return ops.assign(pending.fresh, ops.ones((), mstype.bool_))
