"""Fixtures of the data-join tests: party tables, schemas, in-process pairs of parties, MariaDB."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.communication.conftest import free_port


def write_table(path: Path, key: str, ids, columns: dict) -> None:
    """A csv with ``key`` then ``columns`` (name -> list of values)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([key] + list(columns))
        for i, ident in enumerate(ids):
            writer.writerow([ident] + [values[i] for values in columns.values()])


def write_schema(path: Path, schema: dict) -> str:
    path.write_text(yaml.safe_dump({name: {"type": kind} for name, kind in schema.items()}, sort_keys=False))
    return str(path)


def make_ids(prefix: str, count: int):
    return [f"{prefix}{i:06d}" for i in range(count)]


def base_config(tmp: Path, role: str, ports: dict, **overrides) -> dict:
    other = "follower" if role == "leader" else "leader"
    config = dict(role=role, server_name=role, http_server_address=f"127.0.0.1:{ports[role]}",
                  remote_server_name=other, remote_server_address=f"127.0.0.1:{ports[other]}",
                  output_dir=str(tmp / f"out_{role}"), bucket_num=3, shard_num=2, thread_num=2,
                  peer_timeout=5.0, start_timeout=20.0, primary_key="oaid")
    config.update(overrides)
    return config


def run_pair(leader_config: dict, follower_config: dict, timeout: float = 60.0):
    """Run both workers in threads of this process (each with its own communicator).

    Returns ``{server_name: (worker, exception or None)}`` (server names: "leader", "follower").
    """
    from mindspore_federated import FLDataWorker, ServerConfig, VerticalFederatedCommunicator

    results = {}

    def party(config):
        comm = VerticalFederatedCommunicator(
            ServerConfig(config["server_name"], config["http_server_address"]),
            ServerConfig(config["remote_server_name"], config["remote_server_address"]), send_deadline=10.0)
        worker = None
        try:
            comm.launch()
            worker = FLDataWorker(config, communicator=comm)
            worker.do_worker()
            results[config["server_name"]] = (worker, None)
        except Exception as err:  # inspected by the test
            results[config["server_name"]] = (worker, err)
        finally:
            comm.close()

    threads = [threading.Thread(target=party, args=(c,), daemon=True) for c in (leader_config, follower_config)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a party did not finish"
    return results


@pytest.fixture
def ports():
    return {"leader": free_port(), "follower": free_port()}


@pytest.fixture
def two_tables(tmp_path):
    """Leader: 60 ids, follower: 50 ids, 30 shared; distinct feature columns; schemas for both."""
    shared = make_ids("s", 30)
    leader_ids = shared + make_ids("l", 30)
    follower_ids = make_ids("f", 20) + shared[::-1]
    write_table(tmp_path / "leader.csv", "oaid", leader_ids,
                {"x": [i * 0.5 for i in range(60)], "tag": [f"t{i}" for i in range(60)]})
    write_table(tmp_path / "follower.csv", "oaid", follower_ids,
                {"y": list(range(50)), "blob": [f"b{i}" for i in range(50)]})
    return SimpleNamespace(
        dir=tmp_path, shared=set(shared), leader_ids=leader_ids, follower_ids=follower_ids,
        leader_csv=str(tmp_path / "leader.csv"), follower_csv=str(tmp_path / "follower.csv"),
        leader_schema=write_schema(tmp_path / "leader_schema.yaml", {"oaid": "string", "x": "float32", "tag": "string"}),
        follower_schema=write_schema(tmp_path / "follower_schema.yaml",
                                     {"oaid": "string", "y": "int64", "blob": "bytes"}))


# --- a throwaway MariaDB server ------------------------------------------------------------------

@pytest.fixture(scope="session")
def mariadb(tmp_path_factory):
    """A MariaDB server in a temp data dir on a loopback port; user ``fl``/``pw``, database ``fl``."""
    install, server = shutil.which("mariadb-install-db"), shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    if install is None or not os.path.exists(server):
        pytest.fail("MariaDB is not installed: run scripts/bootstrap.sh (apt-get install mariadb-server)")
    import pymysql

    root = tmp_path_factory.mktemp("mariadb")
    datadir, sock, port = root / "data", str(root / "mysqld.sock"), free_port()
    user = ["--user=root"] if os.geteuid() == 0 else []
    subprocess.run([install, "--no-defaults", f"--datadir={datadir}", "--auth-root-authentication-method=normal",
                    "--skip-test-db", *user], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen([server, "--no-defaults", f"--datadir={datadir}", f"--socket={sock}", f"--port={port}",
                             "--bind-address=127.0.0.1", "--skip-log-bin", "--innodb-buffer-pool-size=16M",
                             f"--pid-file={root / 'mysqld.pid'}", *user], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                admin = pymysql.connect(unix_socket=sock, user="root")
                break
            except pymysql.err.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mariadbd did not start: {(root / 'server.log').read_text()[-2000:]}")
                time.sleep(0.2)
        with admin.cursor() as cursor:
            cursor.execute("CREATE DATABASE fl")
            cursor.execute("CREATE USER 'fl'@'127.0.0.1' IDENTIFIED BY 'pw'")
            cursor.execute("GRANT ALL ON fl.* TO 'fl'@'127.0.0.1'")
        admin.close()
        yield SimpleNamespace(host="127.0.0.1", port=port, user="fl", password="pw", database="fl")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
