"""PanGu-alpha data loader: MindRecord shards -> batches with EOD-reset positions and attention masks.

Each record holds ``seq_length + 1`` token ids (written by ``preprocess.py``). The model reads
``input_ids[:, :-1]`` as tokens and ``input_ids[:, 1:]`` as labels; positions and the attention mask
describe the ``seq_length`` token positions. With ``eod_reset`` every EOD id starts a new document:
positions restart at 0 after it and no row after it attends to columns up to it (the rule lives in
``src.utils.get_position_and_mask``, shared with the model).
"""
from __future__ import annotations

import glob
import logging
import os
from typing import List, Optional, Tuple

import numpy as np

from .utils import get_position_and_mask

logger = logging.getLogger(__name__)


def causal_position_and_mask(seq_length: int) -> Tuple[np.ndarray, np.ndarray]:
    """Plain positions 0..S-1 and a lower-triangular mask (no EOD reset)."""
    return (np.arange(seq_length, dtype=np.int32),
            np.tril(np.ones((seq_length, seq_length), dtype=np.float32)))


def find_shards(data_url: str) -> List[str]:
    """MindRecord shard files of ``data_url``.

    A directory yields every file that has a ``.db`` index beside it (FileWriter's shards, whatever
    their prefix), falling back to ``*.mindrecord*`` names; a file path is returned as is (MindDataset
    then finds the other shards of its group itself).
    """
    if os.path.isfile(data_url):
        if data_url.endswith(".db"):
            raise ValueError(f"data_url: {data_url} is a MindRecord index; pass the shard file "
                             f"{data_url[:-3]} or its directory")
        return [data_url]
    if not os.path.isdir(data_url):
        raise FileNotFoundError(f"data_url: no such file or directory: {data_url}")
    names = sorted(os.listdir(data_url))
    shards = [os.path.join(data_url, n) for n in names
              if not n.endswith(".db") and f"{n}.db" in names]
    if not shards:
        shards = sorted(p for p in glob.glob(os.path.join(data_url, "*.mindrecord*"))
                        if not p.endswith(".db") and os.path.isfile(p))
    if not shards:
        raise FileNotFoundError(f"data_url: no MindRecord shard (file with a .db index) in {data_url}")
    return shards


def create_dataset(data_url: str, batch_size: int, eod_id: int = 6, shuffle: bool = True,
                   seed: int = 1, drop_remainder: bool = True, column_name: str = "input_ids",
                   num_shards: Optional[int] = None, shard_id: Optional[int] = None,
                   eod_reset: bool = True):
    """Batched ``mindspore.dataset.MindDataset`` of PanGu-alpha records.

    Dict iterator columns: ``input_ids`` int32 [B, S+1], ``position_id`` int32 [B, S],
    ``attention_mask`` float32 [B, S, S] (1 = may attend). The stored column ``column_name`` is
    renamed to ``input_ids``. ``num_shards``/``shard_id`` split the records for data parallelism.

    Determinism: with ``shuffle`` the global dataset seed is set to ``seed`` (MindSpore's shuffle
    reads it), so the same seed gives the same order.
    """
    import mindspore.dataset as ds  # pylint: disable=import-outside-toplevel

    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if (num_shards is None) != (shard_id is None):
        raise ValueError("num_shards and shard_id must be given together")
    shards = find_shards(data_url)
    if shuffle:
        ds.config.set_seed(seed)
    dataset = ds.MindDataset(shards[0] if os.path.isfile(data_url) else shards,
                             columns_list=[column_name], shuffle=shuffle,
                             num_shards=num_shards, shard_id=shard_id)
    if column_name != "input_ids":
        dataset = dataset.rename(input_columns=[column_name], output_columns=["input_ids"])

    def add_position_and_mask(ids: np.ndarray):
        ids = np.asarray(ids, dtype=np.int32)
        if ids.ndim != 1 or ids.shape[0] < 2:
            raise ValueError(f"{data_url}: column '{column_name}' must hold 1-D records of length "
                             f">= 2, got shape {ids.shape}")
        if eod_reset:
            positions, mask = get_position_and_mask(ids, eod_id)
        else:
            positions, mask = causal_position_and_mask(ids.shape[0] - 1)
        return ids, np.asarray(positions, np.int32), np.asarray(mask, np.float32)

    dataset = dataset.map(operations=add_position_and_mask, input_columns=["input_ids"],
                          output_columns=["input_ids", "position_id", "attention_mask"])
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    logger.info("dataset %s: %d shard file(s), batch %d, shuffle=%s seed=%d, eod_reset=%s",
                data_url, len(shards), batch_size, shuffle, seed, eod_reset)
    return dataset
