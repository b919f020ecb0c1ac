"""One worker of the data-parallel follower test (started by msrun from test_data_parallel.py).

Every rank: a follower FLModel under DATA_PARALLEL fed, through RootRelayChannel, with the
messages only rank 0 receives; it computes on its slice of the batch. Rank 0 also runs the same
steps on a single-process FLModel (the reference) and writes the largest differences to OUT.
"""
import json
import sys
from collections import deque

import numpy as np
import mindspore as ms
from mindspore import Tensor

from mindspore_federated import FLModel
from mindspore_federated.trainer.data_parallel import RankGroup, RootRelayChannel
from tests.trainer.splitnet import BATCH, HF, XF, make_nets, write_yaml, yaml_dicts

STEPS = 4


class _Queue:
    """Rank 0's channel to the 'leader': messages prepared in advance."""

    def __init__(self, messages):
        self.inbox = deque(messages)
        self.sent = []

    def recv(self, timeout=None):
        return self.inbox.popleft()

    def send(self, msg):
        self.sent.append(msg)

    def try_send(self, msg, timeout=5.0):
        self.send(msg)

    def close(self):
        pass


def _messages(seed):
    rng = np.random.default_rng(seed)
    return [{"meta": {"step": np.asarray(i, np.int64)},
             "xf": rng.standard_normal((BATCH, XF)).astype(np.float32),
             "loss": {"hf": (rng.standard_normal((BATCH, HF)) / BATCH).astype(np.float32)}}
            for i in range(STEPS)]


def _yaml(out_dir, rank):
    data = yaml_dicts("Adam")["follower"]
    data["grad_scalers"] = [{"inputs": [{"name": "xf"}], "output": {"name": "hf"}, "sens": "loss"}]
    return write_yaml(data, f"{out_dir}/follower_{rank}.yaml")


def run(mode, out_dir, group, reference):
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    yaml_data = _yaml(out_dir, group.rank)
    net = make_nets(seed=1)[0]
    model = FLModel(yaml_data, net)                         # DATA_PARALLEL: gradients summed
    channel = RootRelayChannel(_Queue(_messages(7)) if group.is_root else None, group)
    diffs = {"hf": 0.0, "dxf": 0.0, "weights": 0.0}
    for step in range(STEPS):
        msg = channel.recv()
        assert int(np.asarray(msg["meta"]["step"].asnumpy())) == step
        xf = group.shard(msg["xf"], "xf")
        hf = group.gather(model.forward_one_step({"xf": xf})["hf"])
        grads = model.backward_one_step({"xf": xf}, sens={"loss": {"hf": group.shard(msg["loss"]["hf"])}})
        dxf = group.gather(grads["hf"]["xf"])
        channel.send({"hf": hf, "dxf": dxf})
        if reference is not None:
            ref_hf, ref_dxf, ref_weights = reference[step]
            diffs["hf"] = max(diffs["hf"], float(np.abs(hf.asnumpy() - ref_hf).max()))
            diffs["dxf"] = max(diffs["dxf"], float(np.abs(dxf.asnumpy() - ref_dxf).max()))
            diffs["weights"] = max(diffs["weights"], max(
                float(np.abs(p.asnumpy() - w).max() / (np.abs(w).max() + 1e-12))
                for p, w in zip(net.trainable_params(), ref_weights)))
    return diffs


def reference_run(mode, out_dir):
    """The single-process follower on the full batches (built before DATA_PARALLEL is set)."""
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    net = make_nets(seed=1)[0]
    model = FLModel(_yaml(out_dir, "ref"), net)
    steps = []
    for msg in _messages(7):
        batch = {"xf": Tensor(msg["xf"])}
        hf = model.forward_one_step(batch)["hf"].asnumpy()
        dxf = model.backward_one_step(batch, sens={"loss": {"hf": Tensor(msg["loss"]["hf"])}})["hf"]["xf"]
        steps.append((hf, dxf.asnumpy(), [p.asnumpy().copy() for p in net.trainable_params()]))
    return steps


def main():
    out_dir = sys.argv[1]
    group = RankGroup()                  # first: msrun's scheduler process stops in here
    modes = ("graph", "pynative")
    # the single-process follower, built while FLModel does not see DATA_PARALLEL (rank 0 checks)
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.STAND_ALONE)
    references = {m: reference_run(m, out_dir) for m in modes}   # every rank: same work, same pace
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=False)
    result = {"size": group.size}
    for mode in modes:
        result[mode] = run(mode, out_dir, group, references[mode] if group.is_root else None)
    if group.is_root:
        with open(f"{out_dir}/result.json", "w", encoding="utf-8") as handle:
            json.dump(result, handle)


if __name__ == "__main__":
    main()
