"""The joined data of one party as batches of ``id_hldr``/``wt_hldr`` (+ ``label`` at the leader)."""
import numpy as np

from mindspore_federated.data_join import load_mindrecord
from wide_and_deep import FOLLOWER_FIELDS, LEADER_FIELDS


def schema_columns(role: str):
    """Column names of a party's raw and joined tables (besides the id ``oaid``)."""
    fields = LEADER_FIELDS if role == "leader" else FOLLOWER_FIELDS
    columns = [f"feat_ids_{i}" for i in fields] + [f"feat_vals_{i}" for i in fields]
    return columns + (["label"] if role == "leader" else [])


def create_joined_dataset(dataset_dir, train_mode=True, batch_size=1000, seed=0, drop_remainder=True,
                          role="leader"):
    """Batches in the row order both parties share for ``seed`` (shuffled when ``train_mode``)."""
    dataset = load_mindrecord(input_dir=dataset_dir, shuffle=train_mode, seed=seed, num_parallel_workers=1)
    fields = LEADER_FIELDS if role == "leader" else FOLLOWER_FIELDS
    ids = [f"feat_ids_{i}" for i in fields]
    vals = [f"feat_vals_{i}" for i in fields]
    suffix = "" if role == "leader" else "0"

    def combine(*columns):
        n = len(fields)
        out = (np.array(columns[:n], np.int32).reshape(-1), np.array(columns[n:2 * n], np.float32).reshape(-1))
        return out + ((np.array(columns[2 * n], np.float32).reshape(1),) if role == "leader" else ())

    inputs = ids + vals + (["label"] if role == "leader" else [])
    outputs = [f"id_hldr{suffix}", f"wt_hldr{suffix}"] + (["label"] if role == "leader" else [])
    dataset = dataset.map(operations=combine, input_columns=inputs, output_columns=outputs)
    dataset = dataset.project(outputs)
    return dataset.batch(batch_size, drop_remainder=drop_remainder)
