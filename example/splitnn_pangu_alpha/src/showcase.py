"""What the main job shows after training: perplexity against the unigram baseline, and completions.

The unigram baseline is the perplexity on the eval records of a model that ignores context (token
frequencies of the training records, add-one smoothed): a language model has learnt something
only below it. The completions continue the first tokens of a few eval documents with the split
model and the centralised model, loaded from the checkpoints the run just wrote (the documented
`--run_type predict` path), side by side, sampled with the original example's defaults.
"""
from __future__ import annotations

import argparse
import logging
import math
from typing import Any, Dict, List, Optional

import numpy as np

from .dataset import create_dataset
from .generate import GenerateOptions, generate_ids
from .pangu_alpha_config import PanguAlphaConfig
from .predict import central_generator, one_line, split_local_generator

logger = logging.getLogger(__name__)

__all__ = ["unigram_perplexity", "eval_prompts", "show_model"]


def _records(url: str, config: PanguAlphaConfig, limit: Optional[int] = None) -> np.ndarray:
    dataset = create_dataset(url, 1, config.eod_id, shuffle=False, drop_remainder=False)
    rows = []
    for i, batch in enumerate(dataset.create_dict_iterator(num_epochs=1, output_numpy=True)):
        if limit is not None and i >= limit:
            break
        rows.append(np.asarray(batch["input_ids"]).reshape(-1))
    return np.stack(rows)


def unigram_perplexity(train_url: str, eval_url: str, config: PanguAlphaConfig) -> float:
    """Perplexity of add-one-smoothed training token frequencies on the eval labels the model is scored on."""
    counts = np.bincount(_records(train_url, config)[:, 1:].reshape(-1), minlength=config.vocab_size) + 1.0
    logp = np.log(counts / counts.sum())
    ids = _records(eval_url, config)
    scored = ids[:, 1:][ids[:, :-1] != config.eod_id]  # the loss skips labels whose input is EOD
    return float(math.exp(-logp[scored].mean()))


def eval_prompts(eval_url: str, config: PanguAlphaConfig, count: int = 3, length: int = 8) -> List[List[int]]:
    """The first `length` ids of the first `count` eval documents that start inside a record.

    Records are consecutive chunks of the token stream: only the first record begins with a
    document; in the others a document starts after an EOD."""
    prompts: List[List[int]] = []
    for index, row in enumerate(_records(eval_url, config, limit=200)):
        starts = ([0] if index == 0 else []) + [i + 1 for i in np.nonzero(row == config.eod_id)[0]]
        for start in starts:
            piece = row[start:start + length]
            if len(piece) == length and config.eod_id not in piece and config.eot_id not in piece:
                prompts.append([int(t) for t in piece])
                break
        if len(prompts) == count:
            break
    return prompts


def show_model(args: argparse.Namespace, config: PanguAlphaConfig, split: Dict[str, Any],
               central: Optional[Dict[str, Any]], central_dir: str, max_new: int = 24) -> Dict[str, Any]:
    """Log perplexities (split, centralised, unigram) and sampled completions of eval prompts."""
    from .tokenizer import JIEBATokenizer  # pylint: disable=import-outside-toplevel
    out: Dict[str, Any] = {}
    if not (args.data_url and args.eval_data_url and args.vocab_model):
        logger.info("no text data (synthetic run): no perplexity baseline or completions to show")
        return out
    unigram = unigram_perplexity(args.data_url, args.eval_data_url, config)
    out["unigram_perplexity"] = unigram
    line = f"eval perplexity: split {split.get('perplexity', float('nan')):.2f}"
    if central is not None:
        line += f", centralised {central.get('perplexity', float('nan')):.2f}"
    logger.info("%s; unigram baseline %.2f (token frequencies only)", line, unigram)
    if not args.save_ckpt_steps:
        logger.info("no checkpoints written (--save_ckpt_steps 0): no completions to show")
        return out
    tokenizer = JIEBATokenizer(args.vocab_model)
    # the original example's sampling defaults: top-3 with frequency and presence penalties (a small,
    # briefly trained model repeats its most frequent tokens under greedy choice); the same seed in
    # both layouts, so equal logits give equal texts. Byte-fallback pieces are not sampled: a few
    # minutes of training teach the model that bytes are frequent, not how they spell a character,
    # so it would print random rare characters.
    options = GenerateOptions(top_k_num=3, frequency_penalty=1.5, presence_penalty=0.3, max_generate_length=max_new,
                              end_token=config.eot_id, seed=args.seed, banned_ids=tuple(tokenizer.byte_piece_ids()))
    gen_config = config.replace(dropout_rate=0.0, batch_size=1)
    generators = {"split": split_local_generator(gen_config, args.output_dir)[0]}
    if central is not None:
        generators["centralised"] = central_generator(gen_config, central_dir)[0]
    logger.info("== completions of the first tokens of eval documents by the split and the centralised model "
                "(top-3 sampling, frequency penalty 1.5, presence penalty 0.3, no byte pieces, seed %d) ==", args.seed)
    rows = []
    for prompt in eval_prompts(args.eval_data_url, config):
        row = {"prompt": tokenizer.decode(prompt)}
        logger.info("prompt: %s", one_line(row["prompt"]))
        for name, generator in generators.items():
            rng = np.random.default_rng(options.seed)
            try:
                ids = generate_ids(generator, prompt, options, config.vocab_size, config.seq_length, rng)
            finally:
                generator.close()
            row[name] = tokenizer.decode(ids)
            logger.info("  %-12s generated: %s", name, one_line(row[name]))
        rows.append(row)
    out["completions"] = rows
    return out
