"""Centralised PanGu-alpha training: the whole model in one process with the PanGu recipe.

The baseline that split training must reproduce (SPEC §3.1 "Ours"): FP32-state AdamWeightDecay on
weight-decay groups, warmup + cosine LR, dynamic loss scale with skipped overflow steps, global-norm
clip 1.0. Log lines `epoch E step S/TOTAL loss: L`; eval perplexity at the end; checkpoints hold
weights, Adam moments, optimizer step and loss-scale state, so `--resume` continues exactly.

Examples:
    python train_centralized.py --mode tiny --synthetic --train_steps 100
    python train_centralized.py --mode small --data_url data/train --eval_data_url data/eval \
        --vocab_model data/vocab.model --loss_log output/central_loss.json
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mindspore as ms  # noqa: E402
from mindspore import Tensor  # noqa: E402

from src.cli import output_dir, parse_with_run_config  # noqa: E402
from src.lr_schedule import default_warmup_steps, lr_at  # noqa: E402
from src.optim import PanguOptimizer, PanguTrainOneStepCell  # noqa: E402
from src.pangu_alpha import PanguAlphaWithLoss, count_parameters  # noqa: E402
from src.pangu_alpha_config import PanguAlphaConfig  # noqa: E402
from src.split_pangu_alpha import norm_groups  # noqa: E402
from src.predict_args import add_predict_args  # noqa: E402
from src.utils import (LossLog, add_training_args, config_from_args, latest_checkpoint,  # noqa: E402
                       setup_logging, step_log_line, synthetic_batch)

logger = logging.getLogger("train_centralized")

CKPT_PREFIX = "pangu_centralized"
COLUMNS = ("input_ids", "position_id", "attention_mask")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Centralised PanGu-alpha training (baseline of the split example)")
    add_training_args(parser)
    add_predict_args(parser)
    args = parse_with_run_config(parser, argv)
    output_dir(args, "centralized")
    return args


def set_context(args: argparse.Namespace) -> None:
    mode = ms.GRAPH_MODE if args.exec_mode == "graph" else ms.PYNATIVE_MODE
    extra = {} if args.device_id is None else {"device_id": args.device_id}
    ms.set_context(mode=mode, device_target=args.device_target, **extra)
    ms.set_seed(args.seed)
    np.random.seed(args.seed)


class BatchSource:
    """Training batches as numpy dicts, from MindRecord (`create_dataset`) or the synthetic corpus.

    `steps_per_epoch` is known up front; `iterate(start_step)` yields (epoch 1-based, batch) from
    global step `start_step` on, skipping already-trained batches so a resumed run sees the same data.
    """

    def __init__(self, args: argparse.Namespace, config: PanguAlphaConfig, train: bool = True) -> None:
        self.args = args
        self.config = config
        self.train = train
        self.synthetic = bool(args.synthetic)
        self.dataset = None
        if self.synthetic:
            self.steps_per_epoch = int(args.synthetic_size if train else (args.eval_steps or 8))
        else:
            url = args.data_url if train else args.eval_data_url
            if not url:
                raise ValueError("--data_url is required (or use --synthetic for generated data)")
            from src.dataset import create_dataset  # pylint: disable=import-outside-toplevel
            self.dataset = create_dataset(url, config.batch_size, config.eod_id, shuffle=train,
                                          seed=args.seed, drop_remainder=train)
            self.steps_per_epoch = int(self.dataset.get_dataset_size())
            if self.steps_per_epoch < 1:
                raise ValueError(f"{url}: fewer records than one batch of {config.batch_size}")

    def _check(self, batch: Dict[str, np.ndarray]) -> None:
        ids = batch["input_ids"]
        if ids.shape[1] != self.config.seq_length + 1:
            raise ValueError(f"data records hold {ids.shape[1]} ids but the model needs seq_length + 1 = "
                             f"{self.config.seq_length + 1} (check --seq_length against preprocess.py)")
        top = int(ids.max())
        if top >= self.config.vocab_size:
            raise ValueError(f"data contains token id {top} >= vocab_size {self.config.vocab_size} "
                             f"(pass --vocab_model or --vocab_size matching the data)")

    def iterate(self, start_step: int = 0, num_epochs: int = 1) -> Iterator[Tuple[int, Dict[str, np.ndarray]]]:
        cfg = self.config
        if self.synthetic:
            offset = 0 if self.train else 10_000_019
            for step in range(start_step, num_epochs * self.steps_per_epoch):
                batch = synthetic_batch(offset + step, cfg.batch_size, cfg.seq_length, cfg.vocab_size,
                                        cfg.eod_id, seed=self.args.seed)
                yield step // self.steps_per_epoch + 1, batch
            return
        iterator = self.dataset.create_dict_iterator(num_epochs=num_epochs, output_numpy=True)
        for step, batch in enumerate(iterator):
            if step < start_step:
                continue
            batch = {k: batch[k] for k in COLUMNS}
            if step == start_step:
                self._check(batch)
            yield step // self.steps_per_epoch + 1, batch


def to_tensors(batch: Dict[str, np.ndarray]) -> Tuple[Tensor, Tensor, Tensor]:
    return (Tensor(np.asarray(batch["input_ids"], np.int32)), Tensor(np.asarray(batch["position_id"], np.int32)),
            Tensor(np.asarray(batch["attention_mask"], np.float32)))


def evaluate(network: PanguAlphaWithLoss, batches: Iterator[Tuple[int, Dict[str, np.ndarray]]],
             eod_id: int, max_batches: Optional[int] = None) -> Tuple[float, float, int]:
    """Token-weighted mean loss and perplexity exp(loss) over the batches (dropout off).

    Returns (mean_loss, perplexity, tokens).
    """
    network.set_train(False)
    total, tokens = 0.0, 0
    try:
        for i, (_, batch) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            loss = float(network(*to_tensors(batch)).asnumpy())
            n = int((np.asarray(batch["input_ids"])[:, :-1] != eod_id).sum())
            total += loss * n
            tokens += n
    finally:
        network.set_train(True)
    if tokens == 0:
        raise ValueError("evaluation data has no scored token")
    mean = total / tokens
    return mean, float(math.exp(min(mean, 700.0))), tokens


def build_training(config: PanguAlphaConfig, total_steps: int, warmup_steps: Optional[int] = None
                   ) -> Tuple[PanguAlphaWithLoss, PanguOptimizer, PanguTrainOneStepCell, int]:
    """Model + optimizer + one-step cell for `total_steps` steps; returns the warmup actually used."""
    network = PanguAlphaWithLoss(config)
    warmup = default_warmup_steps(total_steps, config.warmup_steps) if warmup_steps is None else int(warmup_steps)
    decay = max(total_steps - warmup, 1)
    optimizer = PanguOptimizer(network.trainable_params(), start_lr=config.start_lr, end_lr=config.end_lr,
                               warmup_steps=warmup, decay_steps=decay, weight_decay=config.weight_decay,
                               loss_scale=config.loss_scale, loss_scale_window=config.loss_scale_window,
                               clip_norm=config.clip_norm)
    # the split's summation order of the squared gradient norms: bit-identical loss curves
    train_cell = PanguTrainOneStepCell(network, optimizer, norm_groups=norm_groups(config))
    train_cell.set_train(True)
    return network, optimizer, train_cell, warmup


def save(train_cell: PanguTrainOneStepCell, output_dir: str, step: int, epoch: int) -> str:
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, f"{CKPT_PREFIX}_step_{step}.ckpt")
    ms.save_checkpoint(train_cell, path, append_dict={"train_step": step, "train_epoch": epoch})
    logger.info("saved checkpoint %s", path)
    return path


def restore(train_cell: PanguTrainOneStepCell, network: PanguAlphaWithLoss, args: argparse.Namespace) -> int:
    """Apply --resume / --load_ckpt_path; returns the step to continue from."""
    if args.resume:
        where = args.load_ckpt_path or args.output_dir
        found = latest_checkpoint(where, CKPT_PREFIX)
        if found is None:
            if args.load_ckpt_path:
                raise FileNotFoundError(f"--resume: no {CKPT_PREFIX}_step_N.ckpt at {where}")
            logger.info("--resume: no checkpoint in %s, starting at step 0", where)
            return 0
        path, _ = found
        params = ms.load_checkpoint(path)
        step = int(params.pop("train_step").asnumpy()) if "train_step" in params else 0
        params.pop("train_epoch", None)
        not_loaded, _ = ms.load_param_into_net(train_cell, params, strict_load=True)
        if not_loaded:
            raise ValueError(f"{path} lacks parameters {not_loaded[:5]}... (different config?)")
        logger.info("resumed from %s at step %d", path, step)
        return step
    if args.load_ckpt_path:
        found = latest_checkpoint(args.load_ckpt_path, CKPT_PREFIX)
        if found is None:
            raise FileNotFoundError(f"--load_ckpt_path: no checkpoint at {args.load_ckpt_path}")
        params = ms.load_checkpoint(found[0])
        not_loaded, _ = ms.load_param_into_net(network, params, strict_load=True)
        if not_loaded:
            raise ValueError(f"{found[0]} lacks model parameters {not_loaded[:5]}... (different config?)")
        logger.info("loaded model weights from %s (optimizer starts fresh)", found[0])
    return 0


def plan_steps(args: argparse.Namespace, source: "BatchSource") -> Tuple[int, int]:
    """(total steps, epochs): --train_steps if given, else --epoch_size full passes."""
    total = int(args.train_steps) if args.train_steps else int(args.epoch_size) * source.steps_per_epoch
    if total < 1:
        raise ValueError(f"nothing to train: total steps = {total}")
    return total, max(1, math.ceil(total / source.steps_per_epoch))


def run(args: argparse.Namespace) -> Dict[str, Any]:
    """Train (and evaluate); returns losses, final step, eval loss/perplexity, last checkpoint."""
    setup_logging()
    set_context(args)
    config = config_from_args(args)
    source = BatchSource(args, config, train=True)
    total, num_epochs = plan_steps(args, source)
    network, optimizer, train_cell, warmup = build_training(config, total, args.warmup_steps)
    logger.info("PanGu-alpha %s: %d parameters, vocab %d, seq %d, batch %d, %d steps (%d per epoch), "
                "warmup %d, lr %g -> %g, mode %s", args.mode, count_parameters(network), config.vocab_size,
                config.seq_length, config.batch_size, total, source.steps_per_epoch, warmup, config.start_lr,
                config.end_lr, args.exec_mode)
    start = restore(train_cell, network, args)
    loss_log = LossLog(args.loss_log)
    if start:
        loss_log.load_existing(start)

    losses: List[float] = []
    epoch, step = 1, start
    last_ckpt = None
    t0, t_last = time.time(), time.time()
    for epoch, batch in source.iterate(start, num_epochs):
        if step >= total:
            break
        loss_t, overflow_t, scale_t = train_cell(*to_tensors(batch))
        step += 1
        loss = float(loss_t.asnumpy())
        overflow = bool(overflow_t.asnumpy())
        losses.append(loss)
        record = {"step": step, "epoch": epoch, "loss": loss, "loss_scale": float(scale_t.asnumpy()),
                  "overflow": int(overflow)}
        if not overflow:
            record["lr"] = lr_at(int(optimizer.global_step.asnumpy().reshape(-1)[0]) - 1, config.start_lr,
                                 config.end_lr, warmup, max(total - warmup, 1))
        loss_log.add(**record)
        if overflow:
            logger.info("step %d: gradient overflow, update skipped, loss scale -> %g", step,
                        float(optimizer.get_loss_scale().asnumpy()))
        if step % max(args.log_steps, 1) == 0 or step == total:
            now = time.time()
            logger.info(step_log_line(epoch, step, total, loss))
            logger.debug("%.3f s/step", (now - t_last) / max(args.log_steps, 1))
            t_last = now
        if args.save_ckpt_steps and step % args.save_ckpt_steps == 0:
            last_ckpt = save(train_cell, args.output_dir, step, epoch)
    elapsed = time.time() - t0
    if args.save_ckpt_steps and step > start and step % args.save_ckpt_steps != 0:
        last_ckpt = save(train_cell, args.output_dir, step, epoch)
    loss_log.write()
    trained = step - start
    logger.info("trained %d steps in %.1f s (%.2f steps/s)", trained, elapsed, trained / max(elapsed, 1e-9))

    result: Dict[str, Any] = {"losses": losses, "final_step": step, "checkpoint": last_ckpt,
                              "config": config, "steps_per_second": trained / max(elapsed, 1e-9)}
    if (args.eval_data_url or args.synthetic) and args.eval_steps != 0:
        eval_source = BatchSource(args, config, train=False)
        mean, ppl, tokens = evaluate(network, eval_source.iterate(0, 1), config.eod_id, args.eval_steps)
        logger.info("eval loss: %.6f perplexity: %.4f (%d tokens)", mean, ppl, tokens)
        result.update(eval_loss=mean, perplexity=ppl)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.run_type == "predict":
        from src.predict import run_predict  # pylint: disable=import-outside-toplevel
        run_predict(args, "central")
    else:
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
