"""A gradient-taking user optimizer for the FLModel-driven protocol tests (MindSpore Parameters)."""
import numpy as np
from mindspore import Tensor


class GlobalNormSGD:
    """FLModel feeds it gradients (`apply_gradients`); it takes part in the global decision
    (`local_scalars`, then `step(global_norm, overflow)`): SGD with one global-norm clip at 1."""

    def __init__(self, params, lr=0.5):
        self.parameters, self.lr, self.pending = list(params), lr, None

    def apply_gradients(self, grads):
        self.pending = [g.asnumpy() for g in grads]

    def local_scalars(self):
        return float(sum(np.float32((g.astype(np.float32) ** 2).sum()) for g in self.pending)), False

    def step(self, global_norm, overflow):
        if not overflow:
            factor = 1.0 / max(float(global_norm), 1.0)
            for p, g in zip(self.parameters, self.pending):
                p.set_data(Tensor(p.asnumpy() - self.lr * factor * g))
