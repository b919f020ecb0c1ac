"""One worker of the data-parallel follower test (started by msrun from test_data_parallel.py).

Every rank: a follower FLModel under DATA_PARALLEL behind DataParallelHandler, fed through
RootRelayChannel with the messages only rank 0 receives; it computes on its slice of the batch. Rank 0 also runs the same
steps on a single-process FLModel (the reference) and writes the largest differences to OUT.
"""
import json
import sys
from collections import deque

import numpy as np
import mindspore as ms
from mindspore import Tensor

from mindspore_federated import FLModel
from mindspore_federated.trainer.data_parallel import DataParallelHandler, RankGroup, RootRelayChannel
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
    """Per step, what the leader sends: the forward's inputs, then the backward's sensitivities."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(STEPS):
        out.append({"meta": {"step": np.asarray(i, np.int64)}, "xf": rng.standard_normal((BATCH, XF)).astype(np.float32)})
        out.append({"meta": {"step": np.asarray(i, np.int64)},
                    "loss": {"hf": (rng.standard_normal((BATCH, HF)) / BATCH).astype(np.float32)}})
    return out


class _Msg:
    """A received message as the protocol hands it to a follower handler: the raw dict, the sender."""

    def __init__(self, raw, sender="leader"):
        self.raw, self.sender = raw, sender


class _Handler:
    """A minimal follower handler over one FLModel (what the protocol's FLModelFollower does)."""

    def __init__(self, model):
        self.model = model
        self.inputs = None

    def forward(self, msg):
        self.inputs = {"xf": msg.raw["xf"]}
        return {"hf": self.model.forward_one_step(self.inputs)["hf"]}

    def backward(self, msg):
        grads = self.model.backward_one_step(self.inputs, sens={"loss": msg.raw["loss"]})
        return {"dxf": grads["hf"]["xf"]}, None


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
    handler = DataParallelHandler(_Handler(model), group)
    diffs = {"hf": 0.0, "dxf": 0.0, "weights": 0.0}
    for step in range(STEPS):
        msg = _Msg(channel.recv())
        assert int(np.asarray(msg.raw["meta"]["step"].asnumpy())) == step
        hf = handler.forward(msg)["hf"]
        channel.send({"hf": hf})
        dxf = handler.backward(_Msg(channel.recv()))[0]["dxf"]
        channel.send({"dxf": dxf})
        if reference is not None:
            ref_hf, ref_dxf, ref_weights = reference[step]
            diffs["hf"] = max(diffs["hf"], float(np.abs(hf.asnumpy() - ref_hf).max()))
            diffs["dxf"] = max(diffs["dxf"], float(np.abs(dxf.asnumpy() - ref_dxf).max()))
            diffs["weights"] = max(diffs["weights"], max(
                float(np.abs(p.asnumpy() - w).max() / (np.abs(w).max() + 1e-12))
                for p, w in zip(net.trainable_params(), ref_weights)))
    if group.is_root:
        assert len(channel.channel.sent) == 2 * STEPS     # only rank 0 talked to the leader
    return diffs


def reference_run(mode, out_dir):
    """The single-process follower on the full batches (built before DATA_PARALLEL is set)."""
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    net = make_nets(seed=1)[0]
    model = FLModel(_yaml(out_dir, "ref"), net)
    steps = []
    messages = _messages(7)
    for fwd, bwd in zip(messages[::2], messages[1::2]):
        batch = {"xf": Tensor(fwd["xf"])}
        hf = model.forward_one_step(batch)["hf"].asnumpy()
        dxf = model.backward_one_step(batch, sens={"loss": {"hf": Tensor(bwd["loss"]["hf"])}})["hf"]["xf"]
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
