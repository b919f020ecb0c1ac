"""FLDataWorker end to end with both parties in this process (each with its own communicator)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tests.data_join.conftest import base_config, make_ids, run_pair, write_schema, write_table


def _configs(tables, ports, leader=None, follower=None):
    d = tables.dir
    lead = base_config(d, "leader", ports, main_table_files=tables.leader_csv, data_schema_path=tables.leader_schema)
    foll = base_config(d, "follower", ports, main_table_files=tables.follower_csv,
                       data_schema_path=tables.follower_schema, bucket_num=7, shard_num=1, primary_key="nope")
    lead.update(leader or {})
    foll.update(follower or {})
    return lead, foll


def _rows(folder, seed=3):
    from mindspore_federated.data_join import load_mindrecord

    dataset = load_mindrecord(folder, seed=seed, shuffle=True)
    return [row for row in dataset.create_dict_iterator(output_numpy=True, num_epochs=1)]


def _text(value):
    value = np.asarray(value)
    return value.item().decode() if value.dtype.kind == "S" or isinstance(value.item(), bytes) else str(value.item())


def test_join_matches_plain_intersection_and_orders_rows_alike(two_tables, ports):
    lead, foll = _configs(two_tables, ports)
    results = run_pair(lead, foll)
    assert results["leader"][1] is None and results["follower"][1] is None, results
    assert results["leader"][0].intersection_size == len(two_tables.shared)
    # the leader's bucket_num (3) and shard_num (2) won: 3 buckets x 2 shards (+ .db files)
    names = sorted(os.listdir(lead["output_dir"]))
    assert names == sorted(os.listdir(foll["output_dir"]))
    assert {n.rsplit(".", 1)[0] for n in names} <= {f"mindrecord_{b}_{s}" for b in range(3) for s in range(2)}
    leader_rows, follower_rows = _rows(lead["output_dir"]), _rows(foll["output_dir"])
    leader_ids = [_text(r["oaid"]) for r in leader_rows]
    assert set(leader_ids) == set(two_tables.leader_ids) & set(two_tables.follower_ids)
    assert leader_ids == [_text(r["oaid"]) for r in follower_rows]
    # the features travelled with their ids, typed by the schema
    for row in leader_rows:
        index = two_tables.leader_ids.index(_text(row["oaid"]))
        assert row["x"].dtype == np.float32 and float(row["x"]) == index * 0.5
        assert _text(row["tag"]) == f"t{index}"
    for row in follower_rows:
        index = two_tables.follower_ids.index(_text(row["oaid"]))
        assert row["y"].dtype == np.int64 and int(row["y"]) == index
        assert _text(row["blob"]) == f"b{index}"
    # another seed: another order, still the same at both parties
    again = [_text(r["oaid"]) for r in _rows(lead["output_dir"], seed=11)]
    assert again == [_text(r["oaid"]) for r in _rows(foll["output_dir"], seed=11)]
    assert sorted(again) == sorted(leader_ids)
