"""Two party processes over mutual TLS, started the way users start them (get_config + FLDataWorker)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.communication.conftest import PASSWORD, ssl_kwargs
from tests.data_join.conftest import write_schema, write_table

ROOT = Path(__file__).resolve().parents[2]
YAML = ROOT / "example" / "splitnn_criteo" / "yaml_files" / "data_join_config.yaml"


@pytest.fixture(scope="module")
def party_pki(tmp_path_factory):
    from types import SimpleNamespace

    from mindspore_federated.tools import gen_certs as g

    root = tmp_path_factory.mktemp("pki")
    ca = g.generate_ca()
    g.write_ca(root, ca, PASSWORD)
    for name in ("leader", "follower"):
        g.generate_party_certs(root, name, ca, PASSWORD, ips=["127.0.0.1"])
    return SimpleNamespace(dir=str(root), password=PASSWORD)


def _messages(path: Path):
    data = path.read_bytes()
    at = 0
    while at < len(data):
        size = int.from_bytes(data[at:at + 8], "little")
        yield data[at + 8:at + 8 + size]
        at += 8 + size


def test_psi_over_mutual_tls_between_two_processes(tmp_path, party_pki):
    from tests.communication.conftest import free_port

    shared = [f"user-{i:05d}@example.com" for i in range(0, 400, 2)]  # 200 shared, string ids
    leader_ids = shared + [f"user-{i:05d}@example.com" for i in range(1, 300, 2)]
    follower_ids = [f"user-{i:05d}@example.com" for i in range(1000, 1250)] + shared
    write_table(tmp_path / "l.csv", "oaid", leader_ids, {"x": list(range(len(leader_ids)))})
    write_table(tmp_path / "f.csv", "oaid", follower_ids, {"y": list(range(len(follower_ids)))})
    schemas = {role: write_schema(tmp_path / f"{role}.yaml", {"oaid": "string", col: "int32"})
               for role, col in (("leader", "x"), ("follower", "y"))}
    ports = {"leader": free_port(), "follower": free_port()}
    procs = {}
    for role, other in (("leader", "follower"), ("follower", "leader")):
        tls = ssl_kwargs(party_pki, role, crl=None)
        args = ["--role", role, "--server_name", role, "--remote_server_name", other,
                "--http_server_address", f"127.0.0.1:{ports[role]}",
                "--remote_server_address", f"127.0.0.1:{ports[other]}",
                "--main_table_files", str(tmp_path / f"{role[0]}.csv"), "--data_schema_path", schemas[role],
                "--output_dir", str(tmp_path / f"out_{role}"), "--enable_ssl", "True",
                "--server_password", tls["server_password"], "--client_password", tls["client_password"],
                "--server_cert_path", tls["server_cert_path"], "--client_cert_path", tls["client_cert_path"],
                "--ca_cert_path", tls["ca_cert_path"], "--bucket_num", "4" if role == "leader" else "9",
                "--thread_num", "2", "--peer_timeout", "20", "--start_timeout", "60"]
        env = dict(os.environ, PYTHONPATH=str(ROOT), DATA_JOIN_YAML=str(YAML),
                   DATA_JOIN_CAPTURE=str(tmp_path / f"{role}.wire"))
        procs[role] = subprocess.Popen([sys.executable, "-m", "tests.data_join._join_main", *args], cwd=str(ROOT),
                                       env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    logs = {}
    for role, proc in procs.items():
        try:
            logs[role] = proc.communicate(timeout=180)[0]
        finally:
            proc.kill()
        assert proc.returncode == 0, f"{role} failed:\n{logs[role][-4000:]}"
    for role in procs:
        assert "mutual TLS" in logs[role] and f"intersection_size={len(shared)}" in logs[role], logs[role][-3000:]

    from mindspore_federated.data_join import load_mindrecord

    rows = {}
    for role in procs:
        dataset = load_mindrecord(str(tmp_path / f"out_{role}"), seed=5)
        rows[role] = [r["oaid"].item() for r in dataset.create_dict_iterator(output_numpy=True, num_epochs=1)]
        rows[role] = [v.decode() if isinstance(v, bytes) else str(v) for v in rows[role]]
    assert sorted(rows["leader"]) == sorted(set(leader_ids) & set(follower_ids))  # a plain set intersection
    assert rows["leader"] == rows["follower"]  # row i is the same sample at both parties

    # What crossed: group elements, counts and digests -- no id, in any bucket, from either side.
    seen = 0
    for role, ids in (("leader", leader_ids), ("follower", follower_ids)):
        for blob in _messages(tmp_path / f"{role}.wire"):
            seen += 1
            for ident in ids:
                assert ident.encode() not in blob, f"{role} sent the raw id {ident!r}"
            assert b"example.com" not in blob and b"user-" not in blob
    assert seen >= 2 * (2 * 4 + 3)  # hello, own+dbl per bucket (the leader's 4 won), digest, exported, bye
