"""FLDataWorker end to end with both parties in this process (each with its own communicator)."""
from __future__ import annotations

import os
import re

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


def _expect_errors(results, leader_pattern, follower_pattern):
    for role, pattern in (("leader", leader_pattern), ("follower", follower_pattern)):
        error = results[role][1]
        assert error is not None, f"{role} succeeded"
        assert re.search(pattern, str(error)), f"{role}: {error!r} does not match {pattern!r}"


def _no_output(*configs):
    for config in configs:
        folder = config["output_dir"]
        assert not os.path.exists(folder) or not os.listdir(folder), f"partial output in {folder}"
        parent = os.path.dirname(folder)
        assert not [n for n in os.listdir(parent) if ".partial-" in n], "a staging folder was left behind"


def test_schemas_that_disagree_on_the_key_type(two_tables, ports):
    schema = write_schema(two_tables.dir / "int_key.yaml", {"oaid": "int64", "y": "int64"})
    lead, foll = _configs(two_tables, ports, follower={"data_schema_path": schema})
    results = run_pair(lead, foll)
    _expect_errors(results, r"aborted.*schemas disagree: primary key 'oaid' is string in the leader's schema "
                            r"but int64", r"schemas disagree: primary key 'oaid' is string.*but int64")
    assert "int_key.yaml" not in str(results["leader"][1])  # the peer learns the cause, not our paths
    _no_output(lead, foll)


def test_missing_primary_key_column(two_tables, ports):
    write_table(two_tables.dir / "nokey.csv", "id", make_ids("s", 5), {"y": [1] * 5, "blob": ["b"] * 5})
    lead, foll = _configs(two_tables, ports, follower={"main_table_files": str(two_tables.dir / "nokey.csv")})
    results = run_pair(lead, foll)
    _expect_errors(results, r"peer 'follower' aborted.*column is missing",
                   r"nokey.csv: column\(s\) \['oaid'\] missing from the header.*'oaid' is the primary key")


def test_duplicate_ids(two_tables, ports):
    ids = make_ids("s", 10) + ["s000003"]
    write_table(two_tables.dir / "dup.csv", "oaid", ids, {"x": [0.0] * 11, "tag": ["a"] * 11})
    lead, foll = _configs(two_tables, ports, leader={"main_table_files": str(two_tables.dir / "dup.csv")})
    results = run_pair(lead, foll)
    _expect_errors(results, r"not unique: 1 duplicated id\(s\): 's000003' \(.*dup.csv:12\)",
                   r"peer 'leader' aborted the data join: its data has duplicate ids")
    assert "s000003" not in str(results["follower"][1])  # the peer is told the cause, not the data


def test_empty_intersection(two_tables, ports):
    write_table(two_tables.dir / "other.csv", "oaid", make_ids("z", 10), {"y": [1] * 10, "blob": ["b"] * 10})
    lead, foll = _configs(two_tables, ports, follower={"main_table_files": str(two_tables.dir / "other.csv")})
    results = run_pair(lead, foll)
    _expect_errors(results, r"empty intersection: none of this party's 60 ids",
                   r"empty intersection: none of this party's 10 ids")
    _no_output(lead, foll)


def test_two_leaders_is_a_configuration_error(two_tables, ports):
    lead, foll = _configs(two_tables, ports, follower={"role": "leader"})
    results = run_pair(lead, foll)
    _expect_errors(results, r"both parties are configured with role 'leader': peer 'follower' must run with role 'follower'",
                   r"both parties are configured with role 'leader'")


def test_output_dir_with_foreign_files_is_refused_before_joining(two_tables, ports):
    lead, foll = _configs(two_tables, ports)
    os.makedirs(lead["output_dir"])
    (two_tables.dir / "out_leader" / "notes.txt").write_text("mine")
    from mindspore_federated import FLDataWorker

    with pytest.raises(ValueError, match=r"holds files that are not data-join output \(notes.txt\)"):
        FLDataWorker(lead).do_worker()


def test_peer_process_killed_mid_join(two_tables, ports, tmp_path):
    """The follower's process is killed while it masks its ids: the leader says so within peer_timeout."""
    import subprocess
    import sys
    import threading
    import time

    from mindspore_federated import FLDataWorker, ServerConfig, VerticalFederatedCommunicator
    from tests.data_join.test_two_processes import ROOT, YAML

    big = make_ids("s", 30000)  # enough masking work to be caught in the middle of it
    write_table(two_tables.dir / "big.csv", "oaid", big, {"y": [1] * len(big), "blob": ["b"] * len(big)})
    lead, foll = _configs(two_tables, ports, leader={"peer_timeout": 3.0, "start_timeout": 120.0},
                          follower={"main_table_files": str(two_tables.dir / "big.csv"), "thread_num": 1})
    args = [f"--{key}={value}" for key, value in foll.items() if key != "primary_key"]
    follower = subprocess.Popen([sys.executable, "-m", "tests.data_join._join_main", *args], cwd=str(ROOT),
                                env=dict(__import__("os").environ, PYTHONPATH=str(ROOT), DATA_JOIN_YAML=str(YAML)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    outcome = {}

    comm = VerticalFederatedCommunicator(ServerConfig("leader", lead["http_server_address"]),
                                         ServerConfig("follower", lead["remote_server_address"]))

    def leader():
        try:
            with comm:
                FLDataWorker(lead, communicator=comm).do_worker()
        except Exception as err:  # inspected below
            outcome["error"], outcome["at"] = err, time.monotonic()

    thread = threading.Thread(target=leader, daemon=True)
    thread.start()
    try:
        for line in follower.stderr:  # wait until the follower is in the PSI
            if "rows from csv" in line:
                break
        time.sleep(0.5)
        killed_at = time.monotonic()
        follower.kill()
    finally:
        follower.kill()
        follower.wait()
    thread.join(60)
    assert not thread.is_alive()
    # our heartbeat timeout or the communicator's own liveness check, whichever notices first
    assert re.search(r"(peer 'follower' \(127.0.0.1:\d+\) sent nothing, not even a heartbeat, for \d+ s"
                     r"|the data join lost peer 'follower' \(127.0.0.1:\d+\)).*restart the data join",
                     str(outcome.get("error"))), outcome.get("error")
    assert outcome["at"] - killed_at < 15
    _no_output(lead)


def test_peer_names_that_do_not_match(two_tables, ports):
    """The leader expects its peer under another name: the follower is refused, the leader times out."""
    lead, foll = _configs(two_tables, ports, leader={"remote_server_name": "bob", "start_timeout": 4.0},
                          follower={"start_timeout": 4.0})
    results = run_pair(lead, foll)
    _expect_errors(results, r"no answer from peer 'bob' at 127.0.0.1:\d+ within 4 s: start the other party's data "
                            r"join, and check remote_server_name/remote_server_address",
                   r"cannot reach peer 'leader' at 127.0.0.1:\d+: .*unknown sender 'follower'.* check "
                   r"remote_server_name/remote_server_address")
