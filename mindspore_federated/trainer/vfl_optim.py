"""Gradient terms, grad scalers and yaml-built optimizers of one party, one object each.

These are the original MindSpore Federated's ``PartyGradOperation``, ``PartyGradScaler`` and
``PartyOptimizer``, for programs that drive them directly (FLModel computes the same gradients
itself, sharing backward passes between terms). Each object takes the yaml of its item, as a dict
(``yaml_data.opts[0]['grads'][0]``) or a parsed item of FLYamlData, the training network and the
yaml of that network (``yaml_data.train_net``), and is called with the local and remote data
batches and the ``sens`` dict received from the peer.

Differences from the original, all where it would have failed: the network is always called with
all its inputs in the order of ``net_yaml['inputs']`` (the original passed only the inputs a term
lists, in the term's order), and the gradients of terms restricted to different ``params`` are
summed per parameter (the original summed them position by position).

The sensitivity rules shared with FLModel live here too: no ``sens`` = plain gradient (ones),
a number = constant sensitivity, a string = ``sens[tag][output_name]`` from the peer.
"""
import importlib
import logging
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import mindspore as ms
from mindspore import nn, ops, Parameter, ParameterTuple, Tensor

from mindspore_federated.config import yaml_data as _yaml

logger = logging.getLogger(__name__)

SensDict = Mapping[str, Mapping[str, Any]]


# --------------------------------------------------------------------------- shared helpers
def as_tuple(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def to_tensor(value: Any, what: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (np.ndarray, np.generic, int, float, bool, list)):
        return Tensor(np.asarray(value))
    raise TypeError(f"{what}: expected a mindspore.Tensor or numpy array, got {type(value).__name__}")


def sensitivity(term: "_yaml.GradSpec", out: Tensor, sens: Optional[SensDict]) -> Tensor:
    """The sensitivity of ``term`` on its output ``out`` (see the module docstring)."""
    if term.sens is None:
        return ops.ones_like(out)
    if isinstance(term.sens, float):
        return ops.full_like(out, term.sens)
    tag = term.sens
    sens = sens if sens is not None else {}
    if not isinstance(sens, Mapping):
        raise TypeError(f"sens: expected a dict tag -> {{output_name: Tensor}}, got {type(sens).__name__}")
    if tag not in sens:
        raise ValueError(f"{term.path}.sens: tag {tag!r} not in the received sens dict "
                         f"(tags: {', '.join(map(str, sens)) or 'none'})")
    inner = sens[tag]
    if not isinstance(inner, Mapping) or term.output not in inner:
        keys = ", ".join(map(str, inner)) if isinstance(inner, Mapping) else type(inner).__name__
        raise ValueError(f"{term.path}.sens: sens[{tag!r}] has no tensor for output "
                         f"{term.output!r} (has: {keys})")
    value = to_tensor(inner[term.output], f"sens[{tag!r}][{term.output!r}]")
    if tuple(value.shape) != tuple(out.shape):
        raise ValueError(f"{term.path}.sens: sens[{tag!r}][{term.output!r}] has shape "
                         f"{tuple(value.shape)}, output {term.output!r} has {tuple(out.shape)}")
    return value.astype(out.dtype) if value.dtype != out.dtype else value


def output_sensitivities(terms: Sequence["_yaml.GradSpec"], outputs: Any, net: "_yaml.NetSpec",
                         sens: Optional[SensDict]) -> Any:
    """The vjp cotangent of a network's outputs: per output, the sum of its terms' sensitivities
    (zeros for outputs without a term); shaped like ``outputs`` (a tuple or one tensor)."""
    outs = as_tuple(outputs)
    if len(outs) != len(net.outputs):
        raise ValueError(f"train_net {net.name!r} returned {len(outs)} outputs but the yaml lists "
                         f"{len(net.outputs)} ({', '.join(net.output_names)})")
    index = {name: i for i, name in enumerate(net.output_names)}
    total: List[Any] = [None] * len(outs)
    for term in terms:
        i = index[term.output]
        value = sensitivity(term, outs[i], sens)
        total[i] = value if total[i] is None else total[i] + value
    total = [ops.zeros_like(o) if s is None else s for s, o in zip(total, outs)]
    return tuple(total) if isinstance(outputs, (tuple, list)) else total[0]


class _CompiledGrad(nn.Cell):
    """The vjp of ``net`` as one graph compiled once (GRAPH_MODE): calling ``mindspore.vjp`` from
    Python there builds and compiles a new graph on every call."""

    def __init__(self, net: nn.Cell, weights: Sequence[Parameter]):
        super().__init__(auto_prefix=False)  # never rename the network's parameters
        self.net = net
        self.weights = ParameterTuple(weights)
        self.has_weights = bool(weights)
        self.grad = ops.GradOperation(get_all=True, get_by_list=bool(weights), sens_param=True)

    def construct(self, *args):
        if self.has_weights:
            return self.grad(self.net, self.weights)(*args)
        return self.grad(self.net)(*args)


def vjp(net: nn.Cell, inputs: Sequence[Tensor], weights: Sequence[Parameter], cotangent: Any,
        cache: Dict[tuple, Any]) -> Tuple[Any, tuple, tuple]:
    """``(outputs, input gradients, weight gradients)`` of ``net`` at ``inputs`` for the output
    cotangent ``cotangent(outputs)``. In GRAPH_MODE through a compiled graph kept in ``cache``
    (per set of weights), otherwise through ``mindspore.vjp``."""
    if ms.get_context("mode") == ms.GRAPH_MODE:
        outputs = net(*inputs)
        key = (id(net),) + tuple(id(w) for w in weights)
        if key not in cache:
            cache[key] = _CompiledGrad(net, list(weights))
        sens = cotangent(outputs)
        # mutable: a plain tuple would be a compile-time constant, recompiled on every call
        grads = cache[key](*inputs, ms.mutable(sens) if isinstance(sens, tuple) else sens)
        input_grads, weight_grads = grads if weights else (grads, ())
    else:
        if weights:
            outputs, vjp_fn = ms.vjp(net, *inputs, weights=list(weights))
            input_grads, weight_grads = vjp_fn(cotangent(outputs))
        else:
            outputs, vjp_fn = ms.vjp(net, *inputs)
            input_grads, weight_grads = vjp_fn(cotangent(outputs)), ()
    return outputs, as_tuple(input_grads), as_tuple(weight_grads)


def zero_integer_grads(grads: Sequence[Any], inputs: Sequence[Tensor]) -> tuple:
    """Integer/bool data (token ids, masks) has no gradient, even when passed through."""
    return tuple(g if ops.is_floating_point(x) else ops.zeros_like(x) for g, x in zip(grads, inputs))


def grad_reducer(params: Sequence[Parameter], who: str) -> Any:
    """Under DATA_PARALLEL, the all-reduce of gradients across replicas; None otherwise."""
    if ms.get_auto_parallel_context("parallel_mode") != ms.ParallelMode.DATA_PARALLEL:
        return None
    from mindspore import communication  # pylint: disable=import-outside-toplevel
    # the reducer crashes the process (not an exception) if communication is not initialised
    if not communication.GlobalComm.INITED:
        raise RuntimeError("parallel_mode is DATA_PARALLEL but distributed communication is not "
                           "initialised; call mindspore.communication.init() first")
    degree = communication.get_group_size()
    mean = ms.get_auto_parallel_context("gradients_mean")
    logger.info("DATA_PARALLEL: gradients of %s reduced over %d devices (mean=%s)", who, degree, mean)
    return nn.DistributedGradReducer(params, mean, degree, group=communication.GlobalComm.WORLD_COMM_GROUP)


def gather_inputs(net: "_yaml.NetSpec", local_data_batch: Optional[Mapping[str, Any]],
                  remote_data_batch: Optional[Mapping[str, Any]], who: str) -> Tuple[List[Tensor], Dict]:
    """The network's inputs in yaml order (as Tensors) and the merged batch."""
    batch: Dict[str, Any] = {}
    for arg, given in (("local_data_batch", local_data_batch), ("remote_data_batch", remote_data_batch)):
        if given is None:
            continue
        if not isinstance(given, Mapping):
            raise TypeError(f"{arg}: expected a dict of name -> Tensor, got {type(given).__name__}")
        batch.update(given)
    values = []
    for item in net.inputs:
        if item.name not in batch:
            raise ValueError(f"missing input data {item.name!r} ({who}; given: "
                             f"{', '.join(map(str, batch)) or 'nothing'})")
        values.append(to_tensor(batch[item.name], f"input {item.name!r}"))
    return values, batch


def _net_spec(net_yaml: Any) -> "_yaml.NetSpec":
    if isinstance(net_yaml, _yaml.NetSpec):
        return net_yaml
    return _yaml._parse_net(net_yaml, "net_yaml", _yaml._NET_KEYS)  # pylint: disable=protected-access


def _grad_spec(grad_yaml: Any, net: "_yaml.NetSpec", path: str, keys: tuple) -> "_yaml.GradSpec":
    if isinstance(grad_yaml, _yaml.GradSpec):
        return grad_yaml
    return _yaml._parse_grad(grad_yaml, path, net.input_names, net.output_names, keys)  # pylint: disable=protected-access


def params_by_name(net: nn.Cell, filters: Sequence[str]) -> List[Parameter]:
    """Trainable parameters of ``net`` whose name contains any of ``filters``, each once."""
    return [p for p in net.trainable_params() if any(f in p.name for f in filters)]


# ------------------------------------------------------------------------ public classes
class PartyGradOperation:
    """Gradient of one term (``opts[i].grads[j]``) with respect to parameters.

    Args:
        grad_yaml: the term's yaml.
        net: the training network.
        net_yaml: the network's yaml (``yaml_data.train_net``).
        optim_params: the parameters of the term's optimizer, used unless the term has
            ``params`` filters of its own.

    Calling it with ``(local_data_batch, remote_data_batch, sens)`` returns the tuple of
    gradients, one per parameter of ``params``, all-reduced under DATA_PARALLEL.
    """

    def __init__(self, grad_yaml: Any, net: nn.Cell, net_yaml: Any, optim_params: Sequence[Parameter]):
        if not isinstance(net, nn.Cell):
            raise TypeError(f"net: expected a mindspore.nn.Cell, got {type(net).__name__}")
        self._net = net
        self._net_spec = _net_spec(net_yaml)
        self._spec = _grad_spec(grad_yaml, self._net_spec, "grad_yaml", _yaml._GRAD_KEYS)  # pylint: disable=protected-access
        self.params: List[Parameter] = (params_by_name(net, self._spec.params) if self._spec.params
                                        else list(optim_params))
        if not self.params:
            raise ValueError(f"PartyGradOperation for output {self._spec.output!r}: no parameters "
                             f"to differentiate (params filters: {self._spec.params or 'none'})")
        self._reducer = grad_reducer(self.params, f"PartyGradOperation({self._spec.output})")
        self._compiled: Dict[tuple, Any] = {}

    def __call__(self, local_data_batch: Optional[Mapping[str, Any]] = None,
                 remote_data_batch: Optional[Mapping[str, Any]] = None,
                 sens: Optional[SensDict] = None) -> tuple:
        inputs, _ = gather_inputs(self._net_spec, local_data_batch, remote_data_batch,
                                  f"PartyGradOperation of {self._net_spec.name!r}")
        _, _, grads = vjp(self._net, inputs, self.params,
                          lambda outs: output_sensitivities([self._spec], outs, self._net_spec, sens),
                          self._compiled)
        return self._reducer(grads) if self._reducer is not None else grads


class PartyGradScaler:
    """Gradient of one output with respect to the network's inputs, to send to the peer
    (``grad_scalers[k]``). Calling it returns ``OrderedDict(input_name -> gradient)`` for the
    inputs the scaler lists (zeros for integer inputs)."""

    def __init__(self, grad_scale_yaml: Any, net: nn.Cell, net_yaml: Any):
        if not isinstance(net, nn.Cell):
            raise TypeError(f"net: expected a mindspore.nn.Cell, got {type(net).__name__}")
        self._net = net
        self._net_spec = _net_spec(net_yaml)
        self._spec = _grad_spec(grad_scale_yaml, self._net_spec, "grad_scale_yaml", _yaml._SCALER_KEYS)  # pylint: disable=protected-access
        self._compiled: Dict[tuple, Any] = {}

    def grad_scale_name(self) -> str:
        """The output the gradients are of: the key of the result in ``backward_one_step``."""
        return self._spec.output

    def __call__(self, local_data_batch: Optional[Mapping[str, Any]] = None,
                 remote_data_batch: Optional[Mapping[str, Any]] = None,
                 sens: Optional[SensDict] = None) -> "OrderedDict[str, Tensor]":
        inputs, _ = gather_inputs(self._net_spec, local_data_batch, remote_data_batch,
                                  f"PartyGradScaler of {self._net_spec.name!r}")
        _, grads, _ = vjp(self._net, inputs, (),
                          lambda outs: output_sensitivities([self._spec], outs, self._net_spec, sens),
                          self._compiled)
        grads = zero_integer_grads(grads, inputs)
        position = {name: i for i, name in enumerate(self._net_spec.input_names)}
        return OrderedDict((name, grads[position[name]]) for name in self._spec.inputs)


class PartyOptimizer:
    """A ``mindspore.nn`` optimizer built from one ``opts`` entry, applying the sum of its terms.

    ``optim_yaml['type']`` names the class, ``hyper_parameters`` are its keyword arguments and
    ``params`` filters pick the parameters (default: all trainable parameters of ``net``).
    Calling it with ``(local_data_batch, remote_data_batch, sens_dict)`` computes every term's
    gradient, sums them per parameter and applies them.
    """

    def __init__(self, optim_yaml: Any, net: nn.Cell, net_yaml: Any):
        if not isinstance(net, nn.Cell):
            raise TypeError(f"net: expected a mindspore.nn.Cell, got {type(net).__name__}")
        net_spec = _net_spec(net_yaml)
        spec = optim_yaml if isinstance(optim_yaml, _yaml.OptSpec) else _yaml._parse_opt(  # pylint: disable=protected-access
            optim_yaml, "optim_yaml", net_spec.input_names, net_spec.output_names)
        self.type: str = spec.type
        self.net = net
        params = params_by_name(net, spec.params) if spec.params else list(net.trainable_params())
        if not params:
            raise ValueError(f"PartyOptimizer {spec.type!r}: the params filters {spec.params} match "
                             f"no trainable parameter of {type(net).__name__}")
        self.hyperparams: Dict[str, Any] = dict(spec.hyper_parameters, params=params)
        cls = getattr(importlib.import_module("mindspore.nn"), spec.type, None)
        if not (isinstance(cls, type) and issubclass(cls, nn.Optimizer)):
            raise ValueError(f"PartyOptimizer: type {spec.type!r} is not an optimizer class of "
                             f"mindspore.nn")
        try:
            self.optimizer = cls(**self.hyperparams)
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"PartyOptimizer: nn.{spec.type}({spec.hyper_parameters}) failed: {err}") from err
        self.grad_list: List[PartyGradOperation] = [
            PartyGradOperation(term, net, net_spec, params) for term in spec.grads]

    def __call__(self, local_data_batch: Optional[Mapping[str, Any]] = None,
                 remote_data_batch: Optional[Mapping[str, Any]] = None,
                 sens_dict: Optional[SensDict] = None) -> None:
        total: Dict[int, Any] = {}
        for grad_op in self.grad_list:
            for p, g in zip(grad_op.params, grad_op(local_data_batch, remote_data_batch, sens_dict)):
                total[id(p)] = g if id(p) not in total else total[id(p)] + g
        self.optimizer(tuple(total[id(p)] if id(p) in total else ops.zeros_like(p)
                             for p in self.optimizer.parameters))


__all__ = ["PartyGradOperation", "PartyGradScaler", "PartyOptimizer"]
