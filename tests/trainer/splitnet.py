"""A tiny Wide&Deep-like network cut into three parties, plus yaml and data builders.

Follower bottom (F): dense features xf -> hf (sent to the leader).
Leader bottom (L): token ids + dense xl -> hl, and its embedding table (a parameter output, reused
by the top like PanGu's tied word table) and the ids passed through.
Leader top (T): [hf, hl] -> dense -> h; logits = h @ table^T; sparse cross-entropy -> loss.
"""
import copy
from typing import Any, Dict, List, Optional

import numpy as np
import yaml
import mindspore as ms
from mindspore import nn, ops, Tensor, Parameter

from mindspore_federated import FLModel, FLYamlData

BATCH, XF, XL, HF, HL, VOCAB, SEQ = 8, 5, 3, 6, 4, 10, 2


class FollowerBottom(nn.Cell):
    def __init__(self):
        super().__init__()
        self.dense = nn.Dense(XF, HF)

    def construct(self, xf):
        return ops.tanh(self.dense(xf))


class LeaderBottom(nn.Cell):
    def __init__(self):
        super().__init__()
        self.word_table = Parameter(Tensor(np.random.randn(VOCAB, HL).astype(np.float32) * 0.5),
                                    name="word_table")
        self.dense = nn.Dense(XL, HL)

    def construct(self, ids, xl):
        emb = ops.gather(self.word_table, ids, 0).mean(1)
        return ops.tanh(emb + self.dense(xl)), self.word_table, ids


class LeaderTop(nn.Cell):
    def __init__(self):
        super().__init__()
        self.top_dense = nn.Dense(HF + HL, HL)
        self.loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")

    def construct(self, hf, hl, table, y):
        h = self.top_dense(ops.concat((hf, hl), 1))
        logits = ops.matmul(h, table.T)
        return self.loss(logits, y)


class WholeNet(nn.Cell):
    """The uncut network, for the centralised reference."""

    def __init__(self, f, l, t):
        super().__init__()
        self.f, self.l, self.t = f, l, t

    def construct(self, xf, ids, xl, y):
        hf = self.f(xf)
        hl, table, _ = self.l(ids, xl)
        return self.t(hf, hl, table, y)


def make_nets(seed: int):
    ms.set_seed(seed)
    np.random.seed(seed)
    return FollowerBottom(), LeaderBottom(), LeaderTop()


def copy_weights(src: nn.Cell, dst: nn.Cell) -> None:
    for a, b in zip(src.trainable_params(), dst.trainable_params()):
        assert a.shape == b.shape
        b.set_data(Tensor(a.asnumpy().copy()))


def make_batches(n: int, seed: int = 123) -> List[Dict[str, Tensor]]:
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        out.append({
            "xf": Tensor(rng.randn(BATCH, XF).astype(np.float32)),
            "ids": Tensor(rng.randint(0, VOCAB, (BATCH, SEQ)).astype(np.int32)),
            "xl": Tensor(rng.randn(BATCH, XL).astype(np.float32)),
            "y": Tensor(rng.randint(0, VOCAB, (BATCH,)).astype(np.int32)),
        })
    return out


def _items(names, key, value="local"):
    return [{"name": n, key: v} for n, v in (names.items() if isinstance(names, dict)
                                             else ((n, value) for n in names))]


def _net(name, inputs, outputs):
    return {"name": name, "inputs": _items(inputs, "source"),
            "outputs": _items(outputs, "destination")}


def yaml_dicts(opt_type: str = "Adam", lr: float = 0.01, scale: Optional[float] = None,
               ckpt_path: str = "./checkpoints") -> Dict[str, Dict[str, Any]]:
    """The three parties' yaml dicts. ``scale``: constant sens of the top's loss (loss scale)."""
    hyper = {"learning_rate": lr}
    follower = {
        "role": "follower",
        "model": {"train_net": _net("follower_net", {"xf": "local"}, {"hf": "remote"}),
                  "eval_net": _net("follower_net", {"xf": "local"}, {"hf": "remote"})},
        "opts": [{"type": opt_type,
                  "grads": [{"inputs": [{"name": "xf"}], "output": {"name": "hf"},
                             "sens": "loss"}],
                  "hyper_parameters": dict(hyper)}],
        "ckpt_path": ckpt_path,
    }
    bottom_io = ({"ids": "local", "xl": "local"},
                 {"hl": "local", "table": "local", "ids_out": "local"})
    leader_bottom = {
        "role": "leader",
        "model": {"train_net": _net("leader_bottom", *bottom_io),
                  "eval_net": _net("leader_bottom", *bottom_io)},
        "opts": [{"type": opt_type,
                  "grads": [{"inputs": [{"name": "xl"}], "output": {"name": "hl"}, "sens": "loss"},
                            {"inputs": [{"name": "xl"}], "output": {"name": "table"},
                             "sens": "loss"}],
                  "params": [{"name": "word_table"}, {"name": "dense"}],
                  "hyper_parameters": dict(hyper)}],
        "ckpt_path": ckpt_path,
    }
    top_in = {"hf": "remote", "hl": "local", "table": "local", "y": "local"}
    top_grad = {"inputs": [{"name": "hf"}, {"name": "hl"}, {"name": "table"}],
                "output": {"name": "loss"}}
    if scale is not None:
        top_grad["sens"] = scale
    leader_top = {
        "role": "leader",
        "model": {"train_net": _net("leader_top", top_in, {"loss": "local"}),
                  "eval_net": _net("leader_top", top_in, {"loss": "local"})},
        "opts": [{"type": opt_type, "grads": [copy.deepcopy(top_grad)],
                  "hyper_parameters": dict(hyper)}],
        "grad_scalers": [copy.deepcopy(top_grad)],
        "ckpt_path": ckpt_path,
    }
    return {"follower": follower, "leader_bottom": leader_bottom, "leader_top": leader_top}


def write_yaml(data: Dict[str, Any], path) -> FLYamlData:
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    return FLYamlData(str(path))


class SplitParties:
    """Three FLModels wired like the two-party run, in one process."""

    def __init__(self, yamls: Dict[str, FLYamlData], nets, optimizers=None):
        f, l, t = nets
        opts = optimizers or {}
        self.f = FLModel(yamls["follower"], f, optimizers=opts.get("follower"))
        self.l = FLModel(yamls["leader_bottom"], l, optimizers=opts.get("leader_bottom"))
        self.t = FLModel(yamls["leader_top"], t, optimizers=opts.get("leader_top"))
        self.models = (self.f, self.l, self.t)

    def step(self, batch: Dict[str, Tensor]) -> float:
        f_out = self.f.forward_one_step({"xf": batch["xf"]})
        l_out = self.l.forward_one_step({"ids": batch["ids"], "xl": batch["xl"]})
        t_local = {"hl": l_out["hl"], "table": l_out["table"], "y": batch["y"]}
        t_remote = {"hf": f_out["hf"]}
        loss = float(self.t.forward_one_step(t_local, t_remote)["loss"].asnumpy())
        grads = self.t.backward_one_step(t_local, t_remote)        # {"loss": {hf, hl, table}}
        self.l.backward_one_step({"ids": batch["ids"], "xl": batch["xl"]},
                                 sens={"loss": {"hl": grads["loss"]["hl"],
                                                "table": grads["loss"]["table"]}})
        # the follower receives only its own tensor, as over the wire
        self.f.backward_one_step({"xf": batch["xf"]}, sens={"loss": {"hf": grads["loss"]["hf"]}})
        return loss


def centralised_run(nets, batches, lr: float = 0.01):
    """Independent reference: value_and_grad over the uncut net + one Adam."""
    whole = WholeNet(*nets)
    opt = nn.Adam(whole.trainable_params(), learning_rate=lr)
    grad_fn = ms.value_and_grad(whole, None, opt.parameters)
    losses = []
    for b in batches:
        loss, grads = grad_fn(b["xf"], b["ids"], b["xl"], b["y"])
        opt(grads)
        losses.append(float(loss.asnumpy()))
    return losses, whole


def params_np(cell: nn.Cell) -> List[np.ndarray]:
    return [p.asnumpy().copy() for p in cell.trainable_params()]


class LossScaleAdam(nn.Cell):
    """A user optimizer as a party would write one: computes its own gradients with a constant
    loss scale (or the already scaled sensitivities received from the peer), un-scales and
    applies Adam. Called by FLModel as ``opt(*inputs, sens=sens)``.

    ``terms``: list of (output_index, sens) with sens a number (constant) or a tag whose
    ``sens[tag][output_name]`` tensor is used.
    """

    def __init__(self, net: nn.Cell, terms, output_names, lr: float = 0.01,
                 loss_scale: float = 1024.0):
        super().__init__(auto_prefix=False)
        self.net = net
        self.opt = nn.Adam(net.trainable_params(), learning_rate=lr)
        self.terms = terms
        self.output_names = output_names
        self.loss_scale = Parameter(Tensor(loss_scale, ms.float32), name="loss_scale",
                                    requires_grad=False)

    def __call__(self, *inputs, sens=None):
        outs, vjp_fn = ms.vjp(self.net, *inputs, weights=self.opt.parameters)
        multi = isinstance(outs, tuple)
        outs_t = outs if multi else (outs,)
        sens_t = [ops.zeros_like(o) for o in outs_t]
        for idx, s in self.terms:
            if isinstance(s, str):
                value = sens[s][self.output_names[idx]]
            else:
                value = ops.full_like(outs_t[idx], s)
            sens_t[idx] = sens_t[idx] + value
        _, grads = vjp_fn(tuple(sens_t) if multi else sens_t[0])
        grads = tuple(g / self.loss_scale for g in grads)
        self.opt(grads)


def user_optimizers(nets, lr: float = 0.01, scale: float = 1024.0):
    f, l, t = nets
    return {
        "follower": LossScaleAdam(f, [(0, "loss")], ["hf"], lr, scale),
        "leader_bottom": LossScaleAdam(l, [(0, "loss"), (1, "loss")], ["hl", "table", "ids_out"],
                                       lr, scale),
        "leader_top": [LossScaleAdam(t, [(0, scale)], ["loss"], lr, scale)],
    }
