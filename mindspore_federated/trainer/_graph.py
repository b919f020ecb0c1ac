"""The compiled backward of FLModel in GRAPH_MODE: every vjp pass of a step and the optimizers
FLModel feeds, in one graph.

MindSpore's graph mode keeps no autodiff tape between two graph calls, so the backward graph
runs the network's forward again before differentiating it (passes of one step share that
forward: the compiler merges identical subgraphs). What it saves over PyNative is the per-op
dispatch: forward, backward, gradient sums, the data-parallel all-reduce and the optimizer
update run as one compiled graph per party and step.
"""
from typing import Any, List, Sequence, Tuple

from mindspore import nn, ops, ParameterTuple, Parameter

from mindspore_federated.trainer.vfl_optim import _CompiledGrad


class _Apply(nn.Cell):
    """One optimizer fed by FLModel: sum its parameters' gradient terms, reduce, apply."""

    def __init__(self, optimizer: nn.Cell, reducer: Any, plan: Tuple[Tuple[Tuple[int, int], ...], ...]) -> None:
        super().__init__(auto_prefix=False)
        self.optimizer = optimizer
        self.reducer = reducer
        self.has_reducer = reducer is not None
        self.plan = plan
        self.params = ParameterTuple(list(optimizer.parameters))

    def construct(self, weight_grads: Tuple[Any, ...]) -> Any:
        grads = ()
        for i in range(len(self.plan)):
            terms = self.plan[i]
            if not terms:
                total = ops.zeros_like(self.params[i])
            else:
                total = weight_grads[terms[0][0]][terms[0][1]]
                for k in range(1, len(terms)):
                    total = total + weight_grads[terms[k][0]][terms[k][1]]
            grads = grads + (total,)
        if self.has_reducer:
            grads = self.reducer(grads)
        return self.optimizer(grads)


class BackwardGraph(nn.Cell):
    """Called with ``(*inputs, *sens)``: one summed sensitivity per pass. Returns, per pass,
    ``(input_grads, weight_grads)`` (with ``with_outputs``: ``(outputs, that)``, the forward
    computed once for both); the optimizers in ``fused`` are applied inside the graph.

    Args:
        network: the party's training network.
        num_inputs: number of its inputs.
        pass_weights: per pass, the weights it differentiates (may be empty).
        fused: per optimizer applied in the graph, ``(optimizer, reducer, plan)`` where
            ``plan[i]`` lists the ``(pass, weight)`` positions summed into the gradient of
            ``optimizer.parameters[i]``.
    """

    def __init__(self, network: nn.Cell, num_inputs: int, pass_weights: List[List[Parameter]],
                 fused: List[Tuple[nn.Cell, Any, tuple]], with_outputs: bool = False) -> None:
        super().__init__(auto_prefix=False)
        self.network = network
        self.with_outputs = with_outputs
        self.num_inputs = num_inputs
        self.passes = nn.CellList([_CompiledGrad(network, w) for w in pass_weights])
        self.applies = nn.CellList([_Apply(opt, red, plan) for opt, red, plan in fused])

    def construct(self, *args: Any) -> Any:
        inputs = args[:self.num_inputs]
        outputs = None
        if self.with_outputs:  # before the updates below; the compiler shares it with the grads
            outputs = self.network(*inputs)
        results = ()
        k = self.num_inputs
        for grad in self.passes:
            grads = grad(*(inputs + (args[k],)))
            results = results + ((grads if grad.has_weights else (grads, ())),)
            k = k + 1
        weight_grads = ()
        for result in results:
            weight_grads = weight_grads + (result[1],)
        for apply in self.applies:
            apply(weight_grads)
        if self.with_outputs:
            return outputs, results
        return results
