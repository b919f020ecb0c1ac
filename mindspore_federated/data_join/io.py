"""Joined rows to MindRecord files, and back into an order-preserving MindSpore dataset.

Each bucket's rows go to ``mindrecord_<bucket>`` (``shard_num`` 1) or ``mindrecord_<bucket>_<shard>``;
both parties write the same number of rows to the same file names, in the same id order, so the
same ``seed`` gives the same row order at both parties when the files are read back.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from typing import Dict, List, Sequence

logger = logging.getLogger(__name__)

_OUR_FILE = re.compile(r"^mindrecord_(\d+)(?:_(\d+))?(\.db)?$")
_WRITE_BATCH = 1000  # short C++ calls: heartbeat threads keep getting the GIL


def check_output_dir(output_dir: str) -> str:
    """The normalised output folder; refuses one that holds files we did not write (they would be read back)."""
    if not isinstance(output_dir, str) or not output_dir:
        raise ValueError(f"output_dir must be a folder path, got {output_dir!r}")
    path = os.path.normpath(os.path.abspath(output_dir))
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ValueError(f"output_dir: {output_dir!r} is not a directory")
        foreign = sorted(name for name in os.listdir(path) if not _OUR_FILE.match(name))
        if foreign:
            raise ValueError(f"output_dir {output_dir!r} holds files that are not data-join output "
                             f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}); "
                             f"empty it or choose another output_dir")
    return path


def shard_bounds(rows: int, shard_num: int) -> List[range]:
    """``shard_num`` contiguous near-equal ranges covering ``rows`` (the first ones one longer)."""
    base, extra = divmod(rows, shard_num)
    bounds, start = [], 0
    for shard in range(shard_num):
        stop = start + base + (1 if shard < extra else 0)
        bounds.append(range(start, stop))
        start = stop
    return bounds


def _write_file(path: str, schema: Dict[str, Dict[str, str]], columns: Sequence[str], rows) -> None:
    from mindspore.mindrecord import FileWriter

    writer = FileWriter(file_name=path, shard_num=1, overwrite=True)
    writer.add_schema(schema, "data join output")
    batch = []
    for row in rows:
        batch.append(dict(zip(columns, row)))
        if len(batch) == _WRITE_BATCH:
            writer.write_raw_data(batch)
            batch = []
    if batch:
        writer.write_raw_data(batch)
    writer.commit()


def export_mindrecord(folder: str, table, buckets: Sequence[Sequence[str]], schema: Dict[str, Dict[str, str]],
                      shard_num: int) -> int:
    """Write the rows of ``buckets`` (ids, in order) into ``folder``; returns the files written."""
    files = 0
    for bucket, ids in enumerate(buckets):
        if not ids:
            continue
        for shard, span in enumerate(shard_bounds(len(ids), shard_num)):
            if not span:
                continue
            name = f"mindrecord_{bucket}" if shard_num == 1 else f"mindrecord_{bucket}_{shard}"
            _write_file(os.path.join(folder, name), schema, table.columns, table.rows(ids[span.start:span.stop]))
            files += 1
        logger.info("data join: bucket %d: wrote %d rows", bucket, len(ids))
    return files


class StagedOutput:
    """A temporary folder next to ``output_dir`` that replaces it in one rename when complete."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        os.makedirs(os.path.dirname(output_dir), exist_ok=True)
        self.path = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.partial-",
                                     dir=os.path.dirname(output_dir))

    def publish(self) -> None:
        check_output_dir(self.output_dir)  # nobody put foreign files there meanwhile
        old = None
        if os.path.exists(self.output_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(self.output_dir)}.old-",
                                   dir=os.path.dirname(self.output_dir))
            os.rename(self.output_dir, os.path.join(old, "previous"))
        os.rename(self.path, self.output_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _file_order(name: str):
    match = _OUR_FILE.match(name)
    return (int(match.group(1)), int(match.group(2) or 0)) if match else (1 << 62, name)


def load_mindrecord(input_dir: str, seed: int = 0, shuffle=None, **kwargs):
    """The joined rows of ``input_dir`` as a ``mindspore.dataset.MindDataset``.

    Both parties get their rows in the same id order for the same ``seed`` (and the same
    ``shuffle``). ``shuffle`` and ``kwargs`` go to ``MindDataset`` (its default shuffle is global).
    """
    from mindspore import dataset as ds

    if not os.path.isdir(input_dir):
        raise ValueError(f"input_dir: {input_dir!r} is not a directory")
    names = sorted((name for name in os.listdir(input_dir)
                    if not name.endswith(".db") and not name.startswith(".")), key=_file_order)
    if not names:
        raise ValueError(f"input_dir {input_dir!r} holds no MindRecord file (run the data join first)")
    ds.config.set_seed(seed)
    return ds.MindDataset([os.path.join(input_dir, name) for name in names], shuffle=shuffle, **kwargs)
