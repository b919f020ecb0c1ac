"""Split vs centralised PanGu-alpha training, step for step in ONE process (not a test).

The machine this project is measured on is shared: its load changes from one minute to the next,
so two runs timed one after the other compare the load as much as the code. Here the centralised
trainer (train_centralized's one-step cell) and the three split FLModels (embedding, head: party A;
blocks: party B, tensors handed over in memory, the same calls and the same agreed global norm as
the example's parties) train side by side on the same batches, one step of each in turn (the order
flips every step), and the ratio is taken of the medians of their step times. Their losses are
checked equal at every step. The split step is also broken down per call, which shows what party B
pays for its recomputed forward in graph mode (no autodiff tape across graph calls): B's
forward + backward against the same work as one forward+backward graph (a second copy of B,
timed aside and left out of the split step's time).

    .venv/bin/python benchmarks/bench_split_interleaved.py                       # small, graph mode
    .venv/bin/python benchmarks/bench_split_interleaved.py --exec_mode pynative
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example" / "splitnn_pangu_alpha"
sys.path.insert(0, str(EXAMPLE))

import mindspore_federated  # noqa: E402,F401  (native protobuf backend before mindspore)
import mindspore as ms  # noqa: E402
from mindspore import Tensor  # noqa: E402

from mindspore_federated import FLModel, FLYamlData  # noqa: E402
import train_centralized as tc  # noqa: E402
from src.pangu_alpha_config import get_config  # noqa: E402
from src.split_pangu_alpha import (BackboneLossNet, EmbeddingLossNet, HeadLossNet, PanguAlphaAdam,  # noqa: E402
                                   yaml_path)
from src.utils import synthetic_batch  # noqa: E402


_FUSED = "(not in the step) B blocks forward+backward as one graph"


class _Timer:
    def __init__(self) -> None:
        self.times: Dict[str, List[float]] = defaultdict(list)

    def __call__(self, name: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.times[name].append(time.perf_counter() - t0)
        return out


class SplitStep:
    """The three parties' FLModels driven as the example's leader and follower drive them."""

    def __init__(self, config, warmup: int, decay: int) -> None:
        self.nets = {"embedding": EmbeddingLossNet(config), "head": HeadLossNet(config),
                     "backbone": BackboneLossNet(config)}
        self.opts, self.models = {}, {}
        for name, net in self.nets.items():
            yaml_data = FLYamlData(yaml_path(name))
            self.opts[name] = PanguAlphaAdam(net, yaml_data, config, warmup, decay)
            self.models[name] = FLModel(yaml_data, net, optimizers=self.opts[name])
        self.timer = _Timer()
        # party B once more, run as ONE forward+backward graph (what B would pay if its backward
        # could reuse the forward's residuals); timing only, its optimizer never steps
        self.b_fused: Optional[FLModel] = None
        if ms.get_context("mode") == ms.GRAPH_MODE:
            net = BackboneLossNet(config)
            yaml_data = FLYamlData(yaml_path("backbone"))
            self.b_fused = FLModel(yaml_data, net, optimizers=PanguAlphaAdam(net, yaml_data, config, warmup, decay))

    def __call__(self, ids: Tensor, pos: Tensor, mask: Tensor) -> float:
        t, m = self.timer, self.models
        data = {"input_ids": ids, "position_id": pos, "attention_mask": mask}
        scale = Tensor(np.asarray(self.opts["head"].loss_scale_value(), np.float32))
        emb = t("A embedding forward", m["embedding"].forward_one_step, data)
        remote = {"embedding_table": emb["embedding_table"], "attention_mask": mask}
        hidden = t("B blocks forward", m["backbone"].forward_one_step, remote_data_batch=remote)["hidden_states"]
        local = {"input_ids": ids, "word_table": emb["word_table"], "position_id": emb["position_id"],
                 "attention_mask": mask}
        out, head_grads = t("A head forward+backward", m["head"].forward_backward_one_step, local,
                            {"hidden_states": hidden}, sens={"loss_scale": {"output": scale}})
        b_sens = {"output": {"hidden_states": head_grads["output"]["hidden_states"]}}
        b_grads = t("B blocks backward", m["backbone"].backward_one_step, remote_data_batch=remote, sens=b_sens)
        if self.b_fused is not None:
            t0 = time.perf_counter()
            self.b_fused.forward_backward_one_step(remote_data_batch=remote, sens=b_sens)
            self.timer.times[_FUSED].append(
                time.perf_counter() - t0)
        t("A embedding backward", m["embedding"].backward_one_step, data, sens={
            "hidden_states": {"embedding_table": b_grads["hidden_states"]["embedding_table"]},
            "output": {"word_table": head_grads["output"]["word_table"]}})

        def agree_and_apply() -> None:
            total, overflow = np.float32(0.0), False
            for name in ("head", "embedding", "backbone"):   # the leader's order of the float32 sum
                sq, flag = self.opts[name].local_scalars()
                total, overflow = np.float32(total + np.float32(sq)), overflow or flag
            norm = np.sqrt(total).astype(np.float32)
            for opt in self.opts.values():
                opt.step(norm, overflow or not np.isfinite(total))

        t("optimizers (agreed norm)", agree_and_apply)
        return float(out["output"].asnumpy())


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small")
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (compilation)")
    parser.add_argument("--exec_mode", choices=("graph", "pynative"), default="graph")
    args = parser.parse_args(argv)

    ms.set_context(mode=ms.GRAPH_MODE if args.exec_mode == "graph" else ms.PYNATIVE_MODE, device_target="CPU")
    overrides = {"vocab_size": args.vocab_size, "dropout_rate": 0.0, "loss_scale": 1024.0}
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    config = get_config(args.config, **overrides)
    total = args.warmup + args.steps
    _, _, central, warmup = tc.build_training(config, total)
    split = SplitStep(config, warmup, max(total - warmup, 1))
    times: Dict[str, List[float]] = {"central": [], "split": []}
    worst = 0.0
    for step in range(total):
        batch = synthetic_batch(step, config.batch_size, config.seq_length, config.vocab_size, config.eod_id)
        tensors = tc.to_tensors(batch)
        losses = {}
        for name in (("central", "split") if step % 2 == 0 else ("split", "central")):
            t0 = time.perf_counter()
            fused_before = sum(split.timer.times.get(_FUSED, []))
            if name == "central":
                losses[name] = float(central(*tensors)[0].asnumpy())
            else:
                losses[name] = split(*tensors)
            # the split step's time without the side measurement of B as one graph
            times[name].append(time.perf_counter() - t0 - (sum(split.timer.times.get(_FUSED, [])) - fused_before))
        worst = max(worst, abs(losses["split"] - losses["central"]) / abs(losses["central"]))
        print(f"step {step + 1}/{total}: central {times['central'][-1] * 1e3:.0f} ms, split "
              f"{times['split'][-1] * 1e3:.0f} ms, loss {losses['central']:.6f}", file=sys.stderr, flush=True)

    med = {k: statistics.median(v[args.warmup:]) for k, v in times.items()}
    print(f"\nPanGu-alpha `{args.config}` (vocab {config.vocab_size}, batch {config.batch_size}, seq "
          f"{config.seq_length}), CPU, {args.exec_mode} mode, one process, {args.steps} timed steps of each "
          f"after {args.warmup}, interleaved; losses equal to {worst:.1e} (max relative difference).\n")
    print("| run | median step (ms) | steps/s | vs centralised |")
    print("|---|---|---|---|")
    for name, label in (("central", "centralised"), ("split", "split, 3 FLModels (A: embedding + head, B: blocks)")):
        print(f"| {label} | {med[name] * 1e3:.0f} | {1 / med[name]:.3f} | {med['central'] / med[name]:.2f}x |")
    print("\nSplit step by call (median ms):\n")
    med_calls = {name: statistics.median(values[args.warmup:]) * 1e3 for name, values in split.timer.times.items()}
    for name, value in med_calls.items():
        print(f"- {name}: {value:.0f}")
    if _FUSED in med_calls:
        paid = med_calls["B blocks forward"] + med_calls["B blocks backward"]
        print(f"\nParty B's recomputed forward (no autodiff tape across graph calls): B pays "
              f"{paid:.0f} ms for forward + backward where one graph would take {med_calls[_FUSED]:.0f} ms: "
              f"{paid - med_calls[_FUSED]:.0f} ms, {(paid - med_calls[_FUSED]) / (med['split'] * 1e3):.0%} of "
              f"the split step.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
