"""FLModel: drives one party's sub-network through forward, backward, eval and checkpoints.

The yaml (FLYamlData) says which tensors go in and out, which gradients to send to the peer
(grad scalers) and how each optimizer's parameter gradient is assembled from gradient terms.

Gradients are vector-Jacobian products. A term's parameter gradient is linear in its
sensitivity, so all terms of one optimizer are computed with a single vjp whose sensitivity on
each network output is the sum of the sensitivities of the terms on that output (zeros for
outputs without a term). Passes that need the same sensitivities (typically a grad scaler and
the optimizer on the same output with the same sens) share one vjp.

Privacy is applied only where the program asks for it (``FLModel(..., label_dp=LabelDP(eps),
embedding_dp=EmbeddingDP(eps))`` or the program's own calls): the yaml's ``privacy`` section only
supplies eps, as in the original MindSpore Federated.

In PyNative mode ``forward_one_step`` records the autodiff tape and ``backward_one_step`` reuses
it when it is given the same input tensors, so a party runs one forward and one backward per
step, like centralised training, and the backward sees the forward's own dropout masks.
"""
import logging
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import mindspore as ms
from mindspore import nn, ops, Tensor, Parameter

from mindspore_federated.config.yaml_data import FLYamlData, GradSpec, NetSpec, OptSpec
from mindspore_federated.trainer._graph import BackwardGraph
from mindspore_federated.trainer.vfl_optim import (SensDict, as_tuple as _as_tuple, gather_inputs,
                                                   grad_reducer, output_sensitivities,
                                                   to_tensor as _to_tensor, vjp, zero_integer_grads)

logger = logging.getLogger(__name__)

_GLOBAL_STEP_KEY = "global_step"
# MindSpore's PyNative tapes must be consumed last-in, first-out: differentiating a tape while
# a later one is still pending fails ("Can not find top cell for backward"). The local split run
# is naturally LIFO (embedding, backbone, head forward; head, backbone, embedding backward);
# any other order falls back to recomputing the forward.
_PENDING_TAPES: List["_ForwardTape"] = []


@dataclass
class _TermGroup:
    """Terms of one yaml-built optimizer that feed the same parameter subset."""
    terms: List[GradSpec]
    params: List[Parameter]


@dataclass
class _BuiltOpt:
    """An optimizer fed with gradients computed by FLModel (yaml-built, or a user one that
    takes gradients: an ``nn.Optimizer`` or an object with ``apply_gradients``)."""
    index: int
    spec: OptSpec
    optimizer: Any
    params: List[Parameter]
    groups: List[_TermGroup]
    reducer: Any = None
    user_given: bool = False

    def apply(self, grads: tuple) -> None:
        if hasattr(self.optimizer, "apply_gradients") and not isinstance(self.optimizer, nn.Optimizer):
            self.optimizer.apply_gradients(grads)
        else:
            self.optimizer(grads)


@dataclass(eq=False)  # identity semantics: fields hold tensors
class _ForwardTape:
    """The autodiff tape of the last forward_one_step, kept for the next backward."""
    values: Tuple[Any, ...]
    weights: List[Parameter]
    vjp_fn: Any
    outputs: Any


@dataclass
class _Pass:
    """One vjp: the terms whose sensitivities it sums, the weights it differentiates."""
    terms: List[GradSpec]
    weights: "OrderedDict[int, Parameter]" = field(default_factory=OrderedDict)
    input_grads: Tuple[Any, ...] = ()
    weight_grads: Dict[int, Any] = field(default_factory=dict)


def _sens_key(terms: Sequence[GradSpec]) -> tuple:
    """Identity of a summed sensitivity: the multiset of (output, sens) of its terms."""
    return tuple(sorted(((t.output, repr(t.sens)) for t in terms)))


def _matches(filters: Sequence[str], names: Sequence[str]) -> bool:
    return any(f in n for f in filters for n in names)


def _takes_gradients(optimizer: Any) -> bool:
    """Whether FLModel should differentiate for this user optimizer and hand it the gradients."""
    if isinstance(optimizer, nn.Optimizer):
        return True
    return callable(getattr(optimizer, "apply_gradients", None)) and hasattr(optimizer, "parameters")


def _signature(inputs: Sequence[Tensor]) -> tuple:
    return tuple((tuple(x.shape), str(x.dtype)) for x in inputs)


def _applies_in_graph(optimizer: Any) -> bool:
    """Whether the compiled backward can call this optimizer with the gradient tuple: an
    ``nn.Optimizer``, or an ``nn.Cell`` with ``apply_gradients`` whose ``construct(grads)``
    does the same."""
    return isinstance(optimizer, nn.Optimizer) or (
        isinstance(optimizer, nn.Cell) and callable(getattr(optimizer, "apply_gradients", None)))


class FLModel:
    """One party's trainer, driven by its yaml description (SPEC §2.2).

    Args:
        yaml_data: the party's FLYamlData.
        network: training Cell; its outputs map in order to ``train_net.outputs`` and its
            ``construct`` arguments to ``train_net.inputs``.
        loss_fn: if given, the network is trained as ``nn.WithLossCell(network, loss_fn)``.
        optimizers: None (build one optimizer per ``opts`` entry from yaml), a single user
            optimizer (called once per step for all entries), or a list: matched to ``opts`` by
            position when it has one element per entry (a ``None`` element means "build this one
            from yaml"), otherwise a list of user optimizers all called in turn (the original's
            convention). User optimizers are called as ``opt(*inputs_in_yaml_order)``, or
            ``opt(*inputs_in_yaml_order, sens=sens)`` when backward_one_step got a sens dict,
            except those that take gradients (an ``nn.Optimizer``, or an object with
            ``parameters`` and ``apply_gradients(grads)``): for those FLModel computes the
            gradient of their ``parameters`` from the matching ``opts`` entry, sharing backward
            passes with the grad scalers, and calls ``opt(grads)`` / ``opt.apply_gradients(grads)``.
            In GRAPH_MODE the backward and these optimizers run as one compiled graph, which
            calls every ``nn.Cell`` among them as ``opt(grads)`` (a Cell with
            ``apply_gradients`` must accept that call in its ``construct``).
        metrics: object with ``update(*eval_outputs, gt)``, or a dict/list of them.
        eval_network: Cell for ``eval_one_step``; defaults to ``network``.
        label_dp: opt-in LabelDP (e.g. ``LabelDP(yaml_data.label_dp_eps)``) applied to the
            ``eval_net.gt`` train input, once per batch. Default: none; a program that randomises
            its labels itself (as the original's did) must not pass it too.
        embedding_dp: opt-in EmbeddingDP applied to the float ``destination: remote`` outputs
            the network computes (not to inputs passed through, nor to returned Parameters), in
            forward and eval; the gradient received is applied straight through.
    """

    def __init__(self, yaml_data: FLYamlData, network: nn.Cell, loss_fn: Optional[nn.Cell] = None,
                 optimizers: Any = None, metrics: Any = None,
                 eval_network: Optional[nn.Cell] = None, *, label_dp: Any = None,
                 embedding_dp: Any = None) -> None:
        if not isinstance(yaml_data, FLYamlData):
            raise TypeError(f"yaml_data: expected FLYamlData, got {type(yaml_data).__name__}")
        if not isinstance(network, nn.Cell):
            raise TypeError(f"network: expected a mindspore.nn.Cell, got {type(network).__name__}")
        self._yaml = yaml_data
        self._network = network
        if eval_network is not None and not isinstance(eval_network, nn.Cell):
            raise TypeError(f"eval_network: expected a mindspore.nn.Cell, got "
                            f"{type(eval_network).__name__}")
        self._train_net = nn.WithLossCell(network, loss_fn) if loss_fn is not None else network
        self._train_net.set_train(True)
        self._eval_net = eval_network if eval_network is not None else network
        self._metrics = metrics
        self.global_step: int = 0
        self._ckpt_dir: str = yaml_data.ckpt_path
        self._tape: Optional[_ForwardTape] = None
        # GRAPH_MODE: outputs of a forward per input signature (they shape the sensitivities),
        # the compiled backward graphs (without / with the forward's outputs) and the optimizers
        # they apply
        self._out_templates: Dict[tuple, Any] = {}
        self._backward_graphs: Dict[bool, BackwardGraph] = {}
        self._fused_opts: set = set()
        self._embedding_dp, self._label_dp = self._setup_privacy(embedding_dp, label_dp)
        self._noisy_labels: Optional[Tuple[Any, Tensor]] = None

        self._named_trainable: List[Tuple[str, Parameter]] = [
            (name, p) for name, p in self._train_net.parameters_and_names() if p.requires_grad]
        self._check_param_filters()
        self._user_opts, self._built_opts = self._setup_optimizers(optimizers)
        user_given = list(self._user_opts) + [b.optimizer for b in self._built_opts if b.user_given]
        for opt in user_given:
            if not isinstance(opt, nn.Cell):
                logger.warning("user optimizer %s is not an nn.Cell: its state is not saved in "
                               "checkpoints", type(opt).__name__)

    # ------------------------------------------------------------------ setup
    def _setup_privacy(self, embedding_dp: Any, label_dp: Any) -> Tuple[Any, Any]:
        """Check the opted-in mechanisms against the yaml (never built from it implicitly)."""
        from mindspore_federated.privacy import check_compatible  # pylint: disable=import-outside-toplevel
        yaml_data = self._yaml
        for what, mechanism in (("embedding_dp", embedding_dp), ("label_dp", label_dp)):
            if mechanism is not None and not callable(mechanism):
                raise TypeError(f"{what}: expected a callable such as "
                                f"{'EmbeddingDP' if what == 'embedding_dp' else 'LabelDP'}(eps), "
                                f"got {type(mechanism).__name__}")
        if embedding_dp is not None:
            compress = yaml_data.compress_configs
            for item in yaml_data.train_net.outputs:
                if item.destination == "remote":
                    check_compatible(item.name, True, compress.get(item.name))
            logger.info("%r on the remote outputs of %r", embedding_dp, yaml_data.train_net.name)
        if label_dp is not None:
            gt = yaml_data.eval_net.gt
            if gt is None or gt not in yaml_data.train_net.input_names:
                raise ValueError("label_dp: model.eval_net.gt must name the label tensor, "
                                 "an input of train_net (inputs: "
                                 f"{', '.join(yaml_data.train_net.input_names)}; gt: {gt!r})")
            logger.info("%r on the labels %r of %r", label_dp, gt, yaml_data.train_net.name)
        return embedding_dp, label_dp

    @property
    def yaml_data(self) -> FLYamlData:
        return self._yaml

    @property
    def train_network(self) -> nn.Cell:
        return self._train_net

    @property
    def eval_network(self) -> nn.Cell:
        return self._eval_net

    @property
    def optimizers(self) -> List[Any]:
        """The optimizers in use: yaml-built ones in ``opts`` order, then user ones."""
        return [b.optimizer for b in self._built_opts] + list(self._user_opts)

    def _filter_params(self, filters: Sequence[str], candidates: List[Tuple[str, Parameter]],
                       path: str, warn: bool = False) -> List[Tuple[str, Parameter]]:
        """The candidates matching any filter. A filter matching nothing is tolerated (the
        original's own yamls have one), with a warning when ``warn``; nothing matched at all
        leaves the optimizer without parameters, which is an error."""
        if not filters:
            return list(candidates)
        shown = ", ".join(p.name for _, p in candidates[:8])
        more = f", ... ({len(candidates)} in all)" if len(candidates) > 8 else ""
        for j, flt in enumerate(filters):
            if warn and not any(flt in name or flt in p.name for name, p in candidates):
                logger.warning("%s[%d].name: %r matches no trainable parameter of train_net %r, "
                               "ignored (parameters: %s%s)", path, j, flt,
                               self._yaml.train_net.name, shown or "none", more)
        found = [(n, p) for n, p in candidates if _matches(filters, (n, p.name))]
        if not found:
            raise ValueError(f"{path}: none of the filters {list(filters)} matches a trainable "
                             f"parameter of train_net {self._yaml.train_net.name!r} (parameters: "
                             f"{shown or 'none'}{more})")
        return found

    def _check_param_filters(self) -> None:
        """Warn about params filters that match nothing, user optimizer or not (SPEC §2.1)."""
        for i, spec in enumerate(self._yaml.opts):
            own = self._filter_params(spec.params, self._named_trainable, f"opts[{i}].params",
                                      warn=True)
            for j, term in enumerate(spec.grads):
                self._filter_params(term.params, own, f"opts[{i}].grads[{j}].params", warn=True)

    def _setup_optimizers(self, optimizers: Any) -> Tuple[List[Any], List[_BuiltOpt]]:
        specs = self._yaml.opts
        if optimizers is None:
            slots: List[Any] = [None] * len(specs)
        elif isinstance(optimizers, (list, tuple)):
            if len(optimizers) != len(specs):
                if all(callable(o) and not _takes_gradients(o) for o in optimizers):
                    return list(optimizers), []  # the original's list: all called in turn
                raise ValueError(
                    f"optimizers: got a list of {len(optimizers)} but the yaml declares "
                    f"{len(specs)} opts entries ({', '.join(s.type for s in specs) or 'none'}); "
                    f"a list holding optimizers that take gradients (or None) is matched to "
                    f"opts by position")
            slots = list(optimizers)
        else:
            if not callable(optimizers) and not _takes_gradients(optimizers):
                raise TypeError(f"optimizers: expected a callable optimizer or a list, got "
                                f"{type(optimizers).__name__}")
            if not _takes_gradients(optimizers):
                return [optimizers], []
            if len(specs) != 1:
                raise ValueError(f"optimizers: a single optimizer that takes gradients serves one "
                                 f"opts entry, the yaml declares {len(specs)}; pass a list")
            slots = [optimizers]
        user, built = [], []
        for i, (spec, given) in enumerate(zip(specs, slots)):
            if given is None:
                built.append(self._build_optimizer(i, spec))
            elif _takes_gradients(given):
                built.append(self._wrap_optimizer(i, spec, given))
            elif not callable(given):
                raise TypeError(f"optimizers[{i}] (for opts[{i}] {spec.type!r}): expected a "
                                f"callable, got {type(given).__name__}")
            else:
                user.append(given)
        return user, built

    def _build_optimizer(self, index: int, spec: OptSpec) -> _BuiltOpt:
        path = f"opts[{index}]"
        cls = getattr(nn, spec.type, None)
        if not (isinstance(cls, type) and issubclass(cls, nn.Optimizer)):
            raise ValueError(f"{path}.type: {spec.type!r} is not an optimizer class of mindspore.nn "
                             f"and no user optimizer was given for it (pass one via "
                             f"FLModel(optimizers=...))")
        named = self._filter_params(spec.params, self._named_trainable, f"{path}.params")
        params = [p for _, p in named]
        try:
            optimizer = cls(params, **spec.hyper_parameters)
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"{path}.hyper_parameters: nn.{spec.type}({spec.hyper_parameters}) "
                             f"failed: {err}") from err
        return _BuiltOpt(index=index, spec=spec, optimizer=optimizer, params=params,
                         groups=self._term_groups(spec, named, path),
                         reducer=grad_reducer(optimizer.parameters, type(optimizer).__name__))

    def _wrap_optimizer(self, index: int, spec: OptSpec, optimizer: Any) -> _BuiltOpt:
        """A user optimizer that takes gradients: FLModel differentiates for its parameters."""
        path = f"optimizers[{index}] (for opts[{index}] {spec.type!r})"
        params = list(optimizer.parameters)
        own = {id(p) for _, p in self._named_trainable}
        foreign = [p.name for p in params if id(p) not in own]
        if foreign:
            raise ValueError(f"{path}: updates parameters that are not trainable parameters of "
                             f"train_net {self._yaml.train_net.name!r}: {', '.join(foreign[:5])}")
        named = [(n, p) for n, p in self._named_trainable if id(p) in {id(q) for q in params}]
        return _BuiltOpt(index=index, spec=spec, optimizer=optimizer, params=params,
                         groups=self._term_groups(spec, named, f"opts[{index}]"),
                         reducer=grad_reducer(optimizer.parameters, type(optimizer).__name__),
                         user_given=True)

    def _term_groups(self, spec: OptSpec, named: List[Tuple[str, Parameter]],
                     path: str) -> List[_TermGroup]:
        groups: Dict[tuple, _TermGroup] = OrderedDict()
        for j, term in enumerate(spec.grads):
            key = tuple(term.params)
            if key not in groups:
                sub = self._filter_params(term.params, named, f"{path}.grads[{j}].params")
                groups[key] = _TermGroup(terms=[], params=[p for _, p in sub])
            groups[key].terms.append(term)
        return list(groups.values())

    # ----------------------------------------------------------------- inputs
    def _train_inputs(self, local_data_batch: Optional[Mapping[str, Any]],
                      remote_data_batch: Optional[Mapping[str, Any]]) -> Tuple[List[Tensor], Dict]:
        """Train-net inputs; with LabelDP the label is randomised once per batch, so forward and
        backward see the same noisy labels."""
        inputs, batch = self._gather(self._yaml.train_net, "train_net", local_data_batch,
                                     remote_data_batch)
        if self._label_dp is not None:
            gt = self._yaml.eval_net.gt
            original = batch[gt]
            if self._noisy_labels is None or self._noisy_labels[0] is not original:
                self._noisy_labels = (original, self._label_dp(inputs[self._yaml.train_net.input_names.index(gt)]))
            inputs[self._yaml.train_net.input_names.index(gt)] = self._noisy_labels[1]
        return inputs, batch

    def _gather(self, net: NetSpec, which: str, local_data_batch: Optional[Mapping[str, Any]],
                remote_data_batch: Optional[Mapping[str, Any]]) -> Tuple[List[Tensor], Dict]:
        """Inputs in yaml order (as Tensors) and the merged batch."""
        return gather_inputs(net, local_data_batch, remote_data_batch,
                             f"{which} {net.name!r} of the {self._yaml.role} party")

    def _name_outputs(self, outputs: Any, net: NetSpec, which: str) -> "OrderedDict[str, Tensor]":
        outs = _as_tuple(outputs)
        if len(outs) != len(net.outputs):
            raise ValueError(f"{which} {net.name!r} returned {len(outs)} outputs but the yaml lists "
                             f"{len(net.outputs)} ({', '.join(net.output_names)})")
        return OrderedDict(zip(net.output_names, outs))

    # ---------------------------------------------------------------- forward
    def forward_one_step(self, local_data_batch: Optional[Mapping[str, Any]] = None,
                         remote_data_batch: Optional[Mapping[str, Any]] = None
                         ) -> "OrderedDict[str, Tensor]":
        """Run the train net; returns its outputs by yaml name."""
        net = self._yaml.train_net
        inputs, batch = self._train_inputs(local_data_batch, remote_data_batch)
        self._drop_tape()
        if not self._records_tape():
            outputs = self._train_net(*inputs)
            if ms.get_context("mode") == ms.GRAPH_MODE:  # shapes of the backward's sensitivities
                self._out_templates.setdefault(_signature(inputs), outputs)
            return self._privatize(self._name_outputs(outputs, net, "train_net"))
        weights = self._all_weights()
        if weights:
            outputs, vjp_fn = ms.vjp(self._train_net, *inputs, weights=weights)
        else:
            outputs, vjp_fn = ms.vjp(self._train_net, *inputs)
        named = self._privatize(self._name_outputs(outputs, net, "train_net"))
        # A Parameter returned as an output (a tied table) must not reach the peer's autodiff
        # as the Parameter itself: recording it there would corrupt this party's pending tape.
        for name, value in named.items():
            if isinstance(value, Parameter):
                named[name] = Tensor(value.asnumpy())  # Tensor() copies
        self._tape = _ForwardTape(values=tuple(batch[item.name] for item in net.inputs),
                                  weights=weights, vjp_fn=vjp_fn, outputs=outputs)
        _PENDING_TAPES.append(self._tape)
        return named

    def _drop_tape(self) -> None:
        if self._tape is not None:
            _PENDING_TAPES[:] = [t for t in _PENDING_TAPES if t is not self._tape]
        self._tape = None

    def _privatize(self, named: "OrderedDict[str, Tensor]", net: Optional[NetSpec] = None
                   ) -> "OrderedDict[str, Tensor]":
        """EmbeddingDP on the float activations bound for the peer. Outputs that merely pass an
        input through (an attention mask, position ids) carry no learned features, and a returned
        Parameter (a tied weight table) is a weight, not an activation: both are left alone.
        The gradient that comes back is applied to the exact activations (straight-through):
        the quantiser has no gradient."""
        if self._embedding_dp is None:
            return named
        net = net or self._yaml.train_net
        passed_through = set(net.input_names)
        for item in net.outputs:
            value = named[item.name]
            if (item.destination == "remote" and item.name not in passed_through
                    and ops.is_floating_point(value) and not self._is_weight(value)):
                named[item.name] = self._embedding_dp(value)
        return named

    def _is_weight(self, value: Tensor) -> bool:
        """Whether an output is one of the network's weights. In PyNative mode a returned
        Parameter is itself; a compiled graph returns a copy, recognised by shape and value
        (compared only against weights of the same shape, which activations rarely have)."""
        if isinstance(value, Parameter):
            return True
        shape = tuple(value.shape)
        weights = list(self._train_net.get_parameters()) + list(self._eval_net.get_parameters())
        same = [p for p in weights if tuple(p.shape) == shape]
        if not same:
            return False
        data = value.asnumpy()
        return any(np.array_equal(p.asnumpy(), data) for p in same)

    def _records_tape(self) -> bool:
        """Keep the forward's tape only where backward can reuse it (PyNative, FLModel grads)."""
        if ms.get_context("mode") != ms.PYNATIVE_MODE:
            return False
        return bool(self._yaml.grad_scalers) or bool(self._built_opts)

    def _all_weights(self) -> List[Parameter]:
        seen: "OrderedDict[int, Parameter]" = OrderedDict()
        for built in self._built_opts:
            for group in built.groups:
                for p in group.params:
                    seen.setdefault(id(p), p)
        return list(seen.values())

    def _take_tape(self, batch: Mapping[str, Any]) -> Optional[_ForwardTape]:
        """The recorded tape if backward got the very tensors the forward ran on and the tape
        is the newest pending one."""
        tape = self._tape
        if tape is None:
            return None
        on_top = bool(_PENDING_TAPES) and _PENDING_TAPES[-1] is tape
        self._drop_tape()
        values = tuple(batch.get(item.name) for item in self._yaml.train_net.inputs)
        if not (len(values) == len(tape.values) and all(a is b for a, b in zip(values, tape.values))):
            logger.debug("backward_one_step got other input tensors than forward_one_step: "
                         "recomputing the forward pass")
            return None
        if not on_top:
            logger.debug("a later forward pass is still pending: recomputing the forward pass")
            return None
        return tape

    # --------------------------------------------------------------- backward
    def _run_pass(self, pas: _Pass, inputs: List[Tensor], sens: SensDict,
                  tape: Optional[_ForwardTape] = None) -> None:
        def cotangent(outputs: Any) -> Any:
            return output_sensitivities(pas.terms, outputs, self._yaml.train_net, sens)

        if tape is not None:  # differentiates all weights; this pass keeps those it needs
            weights = tape.weights
            grads = tape.vjp_fn(cotangent(tape.outputs))
            input_grads, weight_grads = grads if weights else (grads, ())
            input_grads, weight_grads = _as_tuple(input_grads), _as_tuple(weight_grads)
        else:
            weights = list(pas.weights.values())
            # PyNative only: in GRAPH_MODE backward_one_step runs _run_graph instead
            _, input_grads, weight_grads = vjp(self._train_net, inputs, weights, cotangent, {})
        pas.weight_grads = {id(p): g for p, g in zip(weights, weight_grads)}
        pas.input_grads = zero_integer_grads(input_grads, inputs)

    def backward_one_step(self, local_data_batch: Optional[Mapping[str, Any]] = None,
                          remote_data_batch: Optional[Mapping[str, Any]] = None,
                          sens: Optional[SensDict] = None
                          ) -> Dict[str, "OrderedDict[str, Tensor]"]:
        """Compute the grads to send to the peer, update parameters, advance global_step.

        Returns ``{scaler_output_name: OrderedDict(input_name -> grad)}``. Inputs without a
        gradient (integer/bool data such as token ids and masks) get zeros of their own dtype.
        """
        return self._backward(local_data_batch, remote_data_batch, sens, with_outputs=False)[1]

    def forward_backward_one_step(self, local_data_batch: Optional[Mapping[str, Any]] = None,
                                  remote_data_batch: Optional[Mapping[str, Any]] = None,
                                  sens: Optional[SensDict] = None
                                  ) -> Tuple["OrderedDict[str, Tensor]", Dict[str, "OrderedDict[str, Tensor]"]]:
        """``forward_one_step`` then ``backward_one_step`` on one batch: ``(outputs, grads)``.

        For a party that knows its sensitivities without waiting for the peer (the last
        sub-network, whose output is the loss). In GRAPH_MODE both run as one compiled graph,
        which computes the forward once instead of twice.
        """
        if ms.get_context("mode") != ms.GRAPH_MODE or not (self._yaml.grad_scalers or self._built_opts):
            outputs = self.forward_one_step(local_data_batch, remote_data_batch)
            return outputs, self.backward_one_step(local_data_batch, remote_data_batch, sens)
        outputs, grads = self._backward(local_data_batch, remote_data_batch, sens, with_outputs=True)
        return self._privatize(self._name_outputs(outputs, self._yaml.train_net, "train_net")), grads

    def _backward(self, local_data_batch: Optional[Mapping[str, Any]],
                  remote_data_batch: Optional[Mapping[str, Any]], sens: Optional[SensDict],
                  with_outputs: bool) -> Tuple[Any, Dict[str, "OrderedDict[str, Tensor]"]]:
        inputs, batch = self._train_inputs(local_data_batch, remote_data_batch)
        tape = self._take_tape(batch)
        received: SensDict = sens if sens is not None else {}
        if not isinstance(received, Mapping):
            raise TypeError(f"sens: expected a dict tag -> {{output_name: Tensor}}, "
                            f"got {type(received).__name__}")

        passes: "OrderedDict[tuple, _Pass]" = OrderedDict()
        scaler_keys = []
        for scaler in self._yaml.grad_scalers:
            key = _sens_key([scaler])
            passes.setdefault(key, _Pass(terms=[scaler]))
            scaler_keys.append(key)
        group_keys: List[List[tuple]] = []
        for built in self._built_opts:
            keys = []
            for group in built.groups:
                key = _sens_key(group.terms)
                pas = passes.setdefault(key, _Pass(terms=list(group.terms)))
                for p in group.params:
                    pas.weights.setdefault(id(p), p)
                keys.append(key)
            group_keys.append(keys)
        fused: set = set()
        outputs = None
        if ms.get_context("mode") == ms.GRAPH_MODE and passes:
            outputs = self._run_graph(passes, group_keys, inputs, received, with_outputs)
            fused = self._fused_opts
        else:
            # The tape serves one backward pass (a second one recomputes the forward): give it
            # to the pass with the most weights, which is the most expensive one to recompute.
            tape_pass = max(passes.values(), key=lambda p: len(p.weights), default=None)
            for pas in passes.values():
                self._run_pass(pas, inputs, received, tape if pas is tape_pass else None)

        result: Dict[str, "OrderedDict[str, Tensor]"] = OrderedDict()
        positions = {name: i for i, name in enumerate(self._yaml.train_net.input_names)}
        for scaler, key in zip(self._yaml.grad_scalers, scaler_keys):
            grads = passes[key].input_grads
            result[scaler.output] = OrderedDict(
                (name, grads[positions[name]]) for name in scaler.inputs)

        for built, keys in zip(self._built_opts, group_keys):
            if built.index not in fused:
                self._apply_built(built, [passes[k] for k in keys])
        for opt in self._user_opts:
            if sens:
                opt(*inputs, sens=sens)
            else:
                opt(*inputs)
        self.global_step += 1
        return outputs, result

    def _run_graph(self, passes: "OrderedDict[tuple, _Pass]", group_keys: List[List[tuple]],
                   inputs: List[Tensor], sens: SensDict, with_outputs: bool = False) -> Any:
        """GRAPH_MODE: all passes, and the optimizers that can run in a graph, as one compiled
        graph (built at the first call). Returns the forward's outputs when ``with_outputs``
        (the same graph computes them), else None."""
        net = self._yaml.train_net
        templates = self._out_templates.get(_signature(inputs))
        if templates is None:  # the sensitivities are shaped like the outputs: learn them once
            templates = self._out_templates.setdefault(_signature(inputs), self._train_net(*inputs))
        pass_list = list(passes.values())
        graph = self._backward_graphs.get(with_outputs)
        if graph is None:
            position = {key: k for k, key in enumerate(passes)}
            fused = []
            for built, keys in zip(self._built_opts, group_keys):
                if not _applies_in_graph(built.optimizer):
                    continue
                where: Dict[int, List[Tuple[int, int]]] = {}
                for group, key in zip(built.groups, keys):
                    order = list(passes[key].weights)
                    for p in group.params:
                        where.setdefault(id(p), []).append((position[key], order.index(id(p))))
                plan = tuple(tuple(where.get(id(p), ())) for p in built.optimizer.parameters)
                fused.append((built, plan))
            graph = self._backward_graphs[with_outputs] = BackwardGraph(
                self._train_net, len(inputs), [list(p.weights.values()) for p in pass_list],
                [(b.optimizer, b.reducer, plan) for b, plan in fused], with_outputs)
            self._fused_opts = {b.index for b, _ in fused}
            logger.info("GRAPH_MODE: %s %sbackward compiled as one graph (%d vjp passes, %d "
                        "optimizers inside)%s", net.name, "forward+" if with_outputs else "",
                        len(pass_list), len(fused),
                        "" if with_outputs else "; it recomputes the forward (no tape across "
                        "graph calls)")
        # a tuple of tensors would be a compile-time constant (one compilation per step)
        cotangents = [ms.mutable(c) if isinstance(c, tuple) else c
                      for c in (output_sensitivities(p.terms, templates, net, sens) for p in pass_list)]
        results = graph(*inputs, *cotangents)
        outputs = None
        if with_outputs:
            outputs, results = results
        for pas, (input_grads, weight_grads) in zip(pass_list, results):
            pas.input_grads = zero_integer_grads(_as_tuple(input_grads), inputs)
            pas.weight_grads = {id(p): g for p, g in zip(pas.weights.values(), _as_tuple(weight_grads))}
        return outputs

    @staticmethod
    def _apply_built(built: _BuiltOpt, group_passes: List[_Pass]) -> None:
        """Parameter gradient = sum over its groups' terms; then reduce (if parallel) and apply."""
        total: Dict[int, Any] = {}
        for group, pas in zip(built.groups, group_passes):
            for p in group.params:
                grad = pas.weight_grads[id(p)]
                total[id(p)] = grad if id(p) not in total else total[id(p)] + grad
        grads = tuple(total[id(p)] if id(p) in total else ops.zeros_like(p)
                      for p in built.optimizer.parameters)
        if built.reducer is not None:
            grads = built.reducer(grads)
        built.apply(grads)

    # ------------------------------------------------------------------- eval
    def eval_one_step(self, local_data_batch: Optional[Mapping[str, Any]] = None,
                      remote_data_batch: Optional[Mapping[str, Any]] = None
                      ) -> "OrderedDict[str, Tensor]":
        """Run the eval net, feed ``metrics`` (outputs then the ``gt`` tensor), return outputs.

        EmbeddingDP applies here too: evaluation must not send the peer exact activations."""
        net = self._yaml.eval_net
        inputs, batch = self._gather(net, "eval_net", local_data_batch, remote_data_batch)
        named = self._privatize(self._name_outputs(self._eval_net(*inputs), net, "eval_net"), net)
        if self._metrics is not None:
            args = list(named.values())
            if net.gt is not None:
                if net.gt not in batch:
                    raise ValueError(f"missing input data {net.gt!r} (model.eval_net.gt of "
                                     f"{net.name!r}; given: {', '.join(map(str, batch))})")
                args.append(_to_tensor(batch[net.gt], f"gt {net.gt!r}"))
            metrics = self._metrics
            if isinstance(metrics, Mapping):
                metrics = list(metrics.values())
            for metric in (metrics if isinstance(metrics, (list, tuple)) else [metrics]):
                metric.update(*args)
        return named

    # ------------------------------------------------------------ checkpoints
    def _state(self) -> "OrderedDict[str, Parameter]":
        """Everything a resumed run needs: weights, optimizer state, user optimizer cells."""
        state: "OrderedDict[str, Parameter]" = OrderedDict()
        seen = set()
        for name, p in self._network.parameters_and_names():
            state[name] = p
            seen.add(id(p))
        for name, p in self._train_net.parameters_and_names():
            if id(p) not in seen:
                state[f"loss_fn.{name}"] = p
                seen.add(id(p))
        owners = [(f"opts.{b.index}", b.optimizer) for b in self._built_opts]
        owners += [(f"user_opts.{j}", o) for j, o in enumerate(self._user_opts)
                   if isinstance(o, nn.Cell)]
        owners = [(prefix, cell) for prefix, cell in owners if isinstance(cell, nn.Cell)]
        for prefix, cell in owners:
            for name, p in cell.parameters_and_names():
                if id(p) not in seen:
                    state[f"{prefix}.{name}"] = p
                    seen.add(id(p))
        if _GLOBAL_STEP_KEY in state:
            raise ValueError(f"network parameter named {_GLOBAL_STEP_KEY!r} clashes with the "
                             f"checkpoint's step counter; rename the parameter")
        return state

    def save_ckpt(self, path: Optional[str] = None) -> str:
        """Write ``<train_net.name>_step_<global_step>.ckpt`` under ``path`` (or yaml ckpt_path).

        As in the original, a ``path`` given here becomes the directory a later
        ``load_ckpt()`` without a path reads from."""
        if path is not None:
            self._ckpt_dir = path
        directory = self._ckpt_dir
        os.makedirs(directory, exist_ok=True)
        file = os.path.join(directory, f"{self._yaml.train_net.name}_step_{self.global_step}.ckpt")
        entries = [{"name": name, "data": p} for name, p in self._state().items()]
        ms.save_checkpoint(entries, file, append_dict={_GLOBAL_STEP_KEY: self.global_step})
        logger.info("saved checkpoint %s (%d tensors)", file, len(entries))
        return file

    def _resolve_ckpt(self, path: str) -> str:
        if os.path.isfile(path):
            return path
        prefix = self._yaml.train_net.name
        if os.path.isdir(path):
            pattern = re.compile(rf"^{re.escape(prefix)}_step_(\d+)\.ckpt$")
            found = [(int(m.group(1)), name) for name in os.listdir(path)
                     for m in [pattern.match(name)] if m]
            if not found:
                raise FileNotFoundError(f"no checkpoint '{prefix}_step_<n>.ckpt' in directory "
                                        f"{path!r}")
            return os.path.join(path, max(found)[1])
        raise FileNotFoundError(f"checkpoint file or directory not found: {path!r}")

    @staticmethod
    def _assign(param: Parameter, value: Any, name: str, file: str) -> None:
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(f"{file}: {name!r} has shape {tuple(value.shape)}, the model expects "
                             f"{tuple(param.shape)}")
        data = Tensor(value)
        if data.dtype != param.dtype:
            data = data.astype(param.dtype)
        param.set_data(data)

    def load_ckpt(self, phrase: str = "eval", path: Optional[str] = None) -> str:
        """Load a checkpoint file, or the newest one (highest step) of a directory.

        ``'eval'`` (the default, as in the original) loads the weights into the eval network.
        ``'train'`` restores the training network's weights (all must be present) and, when the
        file has them, the optimizer state and ``global_step``; a weight-only checkpoint (the
        original's, or ``mindspore.save_checkpoint(net)``) resumes with fresh optimizer state,
        with a warning. Returns the file loaded.
        """
        if phrase not in ("train", "eval"):
            raise ValueError(f"phrase: expected 'train' or 'eval', got {phrase!r}")
        file = self._resolve_ckpt(path if path is not None else self._ckpt_dir)
        data = ms.load_checkpoint(file)
        if phrase == "train":
            self._load_train(data, file)
        else:
            self._load_eval(data, file)
        logger.info("loaded checkpoint %s (%s, global_step %d)", file, phrase, self.global_step)
        return file

    def _load_train(self, data: Mapping[str, Any], file: str) -> None:
        weight_ids = {id(p) for _, p in self._train_net.parameters_and_names()}
        state = self._state()
        found, missing = {}, []
        for name, p in state.items():
            # our own entry name, else for a weight its Parameter name (what
            # mindspore.save_checkpoint(net) and the original wrote)
            key = name if name in data else None
            if key is None and id(p) in weight_ids:
                key = p.name if p.name in data else None
                if key is None:
                    missing.append(name)
            if key is not None:
                found[name] = key
        if missing:
            raise ValueError(f"{file}: checkpoint lacks {len(missing)} weights of train_net "
                             f"{self._yaml.train_net.name!r}, e.g. {', '.join(missing[:5])}")
        for name, key in found.items():
            self._assign(state[name], data[key], key, file)
        absent = [name for name in state if name not in found]
        if absent:
            logger.warning("%s: weights only, %d optimizer state entries not in the checkpoint "
                           "(e.g. %s) keep their current values", file, len(absent),
                           ", ".join(absent[:3]))
        if _GLOBAL_STEP_KEY in data:
            self.global_step = int(np.asarray(data[_GLOBAL_STEP_KEY].asnumpy()).reshape(-1)[0])
            for built in self._built_opts:  # the original's checkpoints: step, no optimizer state
                step = getattr(built.optimizer, "global_step", None)
                if isinstance(step, Parameter) and f"opts.{built.index}.global_step" not in found:
                    step.set_data(Tensor(np.full(step.shape, self.global_step), step.dtype))
        else:
            logger.warning("%s: no global_step in the checkpoint, keeping %d", file, self.global_step)

    def _load_eval(self, data: Mapping[str, Any], file: str) -> None:
        loaded, missing = 0, []
        for name, p in self._eval_net.parameters_and_names():
            key = name if name in data else (p.name if p.name in data else None)
            if key is None:
                missing.append(name)
                continue
            self._assign(p, data[key], key, file)
            loaded += 1
        if missing and not loaded:
            raise ValueError(f"{file}: none of the eval network's parameters are in the checkpoint "
                             f"(e.g. {', '.join(missing[:5])})")
        if missing:
            logger.warning("%s: %d eval network parameters not in the checkpoint: %s", file,
                           len(missing), ", ".join(missing[:10]))

    # ------------------------------------------------------------ compression
    def get_compress_configs(self) -> Dict[str, Any]:
        """``{tensor_name: CompressConfig}`` for yaml items declaring ``compress_type``.

        A config on a ``source: remote`` input is keyed by that input's name: it applies to the
        gradient sent back for it.
        """
        from mindspore_federated.communication.compression import configs_of  # pylint: disable=import-outside-toplevel
        return configs_of(self._yaml)
