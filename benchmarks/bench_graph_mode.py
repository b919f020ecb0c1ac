"""FLModel backward in GRAPH_MODE (what the original's programs set): compiled graphs vs mindspore.vjp.

Run: .venv/bin/python benchmarks/bench_graph_mode.py [--batch 256] [--repeats 20]

One party's bottom network (embedding lookup + three dense layers, two outputs, an optimizer
per output as in the original's Wide&Deep bottoms). "FLModel backward" is ``backward_one_step``
(each backward pass a graph compiled once, Adam update included); the baseline is the same
gradients through one ``mindspore.vjp`` call per pass, which in GRAPH_MODE builds and compiles a
new graph on every call (FLModel's former path). Medians over repeats, measured in one run.
"""
import argparse

import mindspore_federated  # noqa: F401  (native protobuf backend before mindspore)
import mindspore as ms
import numpy as np
from mindspore import nn, ops

from mindspore_federated import FLModel, FLYamlData
from _timing import median_seconds  # benchmarks/ is on sys.path when run as a script

VOCAB, FIELDS, EMB = 10000, 20, 16


class Bottom(nn.Cell):
    def __init__(self):
        super().__init__()
        self.wide = nn.Embedding(VOCAB, 1)
        self.deep = nn.Embedding(VOCAB, EMB)
        self.dense = nn.SequentialCell(nn.Dense(FIELDS * EMB, 256), nn.ReLU(), nn.Dense(256, 64), nn.ReLU(),
                                       nn.Dense(64, 1))

    def construct(self, ids):
        wide = self.wide(ids).sum(1)
        deep = self.dense(self.deep(ids).reshape((ids.shape[0], -1)))
        return wide, deep


def _yaml() -> FLYamlData:
    net = {"name": "bottom", "inputs": [{"name": "ids", "source": "local"}],
           "outputs": [{"name": "wide", "destination": "remote"}, {"name": "deep", "destination": "remote"}]}
    term = lambda out: {"inputs": [{"name": "ids"}], "output": {"name": out}, "sens": "loss"}  # noqa: E731
    return FLYamlData.from_dict({"role": "follower", "model": {"train_net": net, "eval_net": net}, "opts": [
        {"type": "SGD", "grads": [term("wide")], "params": [{"name": "wide"}],
         "hyper_parameters": {"learning_rate": 0.01}},
        {"type": "Adam", "grads": [term("deep")], "params": [{"name": "deep"}, {"name": "dense"}],
         "hyper_parameters": {"learning_rate": 0.001}}]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(0)
    net = Bottom()
    model = FLModel(_yaml(), net)
    batch = {"ids": ms.Tensor(rng.integers(0, VOCAB, (args.batch, FIELDS)).astype(np.int32))}
    sens = {"loss": {"wide": ms.Tensor(rng.standard_normal((args.batch, 1)).astype(np.float32)),
                     "deep": ms.Tensor(rng.standard_normal((args.batch, 1)).astype(np.float32))}}
    wide = [p for p in net.trainable_params() if "wide" in p.name]
    deep = [p for p in net.trainable_params() if "wide" not in p.name]

    def flmodel_backward():
        model.backward_one_step(batch, sens=sens)

    def vjp_per_call():  # the two passes FLModel makes, each through a fresh mindspore.vjp graph
        for weights, cot in ((wide, (sens["loss"]["wide"], ops.zeros((args.batch, 1), ms.float32))),
                             (deep, (ops.zeros((args.batch, 1), ms.float32), sens["loss"]["deep"]))):
            _, fn = ms.vjp(net, batch["ids"], weights=weights)
            fn(cot)[1][0].asnumpy()

    compiled = median_seconds(flmodel_backward, args.repeats)
    baseline = median_seconds(vjp_per_call, args.repeats)
    print("| batch | FLModel backward ms | mindspore.vjp per call ms | speed-up |")
    print("|---|---|---|---|")
    print(f"| {args.batch} | {compiled * 1e3:.1f} | {baseline * 1e3:.1f} | {baseline / compiled:.1f}x |")


if __name__ == "__main__":
    main()
