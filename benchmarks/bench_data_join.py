"""Data join (ECDH-PSI) between two processes over mutual TLS, next to a plain hash join.

Run: ``.venv/bin/python benchmarks/bench_data_join.py [--ids 1000000] [--overlap 0.5]``

Writes ``--ids`` string ids per party (a fraction ``--overlap`` of them shared) to csv, makes
certificates, then runs in the same session, over the same mutual-TLS communicator setup:

- ``psi``: ``FLDataWorker.do_worker()`` at both parties (read csv, ECDH-PSI, MindRecord export);
- ``plain hash join`` (insecure baseline): the follower sends its raw ids, the leader intersects
  them with a Python set and sends the shared ids back; both write nothing.

For each: wall time (both parties started -> both done), CPU seconds each party spent after its
communicator started (independent of other load on the machine), peak RSS per party, bytes each
party sent (serialized messages). Both parties share this machine's cores. Not a test.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from _peers import free_port as _free_port, write_pki  # noqa: E402  (benchmarks/ is on sys.path)


def _write_inputs(folder: str, count: int, overlap: float) -> None:
    shared = int(count * overlap)
    for role, offset in (("leader", 0), ("follower", count - shared)):
        with open(os.path.join(folder, f"{role}.csv"), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["oaid", "feature"])
            for i in range(offset, offset + count):
                writer.writerow([f"device-{i:012d}", i % 1000])
        with open(os.path.join(folder, f"{role}_schema.yaml"), "w") as handle:
            handle.write("oaid: {type: string}\nfeature: {type: int32}\n")


def _party(args) -> None:
    """One party (run as a child process): prints a JSON line with its figures."""
    import logging

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.party} %(message)s")
    import mindspore_federated  # noqa: F401
    from mindspore_federated import FLDataWorker, SSLConfig, ServerConfig, VerticalFederatedCommunicator
    import numpy as np

    role, other = args.party, "follower" if args.party == "leader" else "leader"
    folder = args.folder
    tls = dict(server_password="pw", client_password="pw", server_cert_path=f"{folder}/pki/{role}_server.p12",
               client_cert_path=f"{folder}/pki/{role}_client.pem", ca_cert_path=f"{folder}/pki/ca.pem")
    comm = VerticalFederatedCommunicator(ServerConfig(role, f"127.0.0.1:{args.ports[role]}"),
                                         ServerConfig(other, f"127.0.0.1:{args.ports[other]}"),
                                         enable_ssl=True, ssl_config=SSLConfig(**tls), liveness_timeout=120.0)
    comm.launch()
    base = resource.getrusage(resource.RUSAGE_SELF)
    base_rss, base_cpu = base.ru_maxrss, base.ru_utime + base.ru_stime
    start = time.monotonic()
    if args.mode == "psi":
        worker = FLDataWorker(dict(role=role, server_name=role, remote_server_name=other,
                                   http_server_address=f"127.0.0.1:{args.ports[role]}",
                                   remote_server_address=f"127.0.0.1:{args.ports[other]}",
                                   main_table_files=f"{folder}/{role}.csv", data_schema_path=f"{folder}/{role}_schema.yaml",
                                   output_dir=f"{folder}/out_{role}", bucket_num=args.bucket_num,
                                   thread_num=args.thread_num, peer_timeout=120.0), communicator=comm)
        worker.do_worker()
        shared = worker.intersection_size
    else:
        with open(f"{folder}/{role}.csv", newline="") as handle:
            reader = csv.reader(handle)
            next(reader)
            ids = [row[0] for row in reader]
        if role == "follower":
            comm.send_tensors(other, {"ids": np.frombuffer("\n".join(ids).encode(), np.uint8)})
            reply = comm.receive(other)["ids"].asnumpy().tobytes().decode()
            shared = len(reply.split("\n")) if reply else 0
        else:
            theirs = comm.receive(other)["ids"].asnumpy().tobytes().decode().split("\n")
            common = sorted(set(ids).intersection(theirs))
            comm.send_tensors(other, {"ids": np.frombuffer("\n".join(common).encode(), np.uint8)})
            shared = len(common)
            comm.receive(other)  # the follower's "done": both finished
        if role == "follower":
            comm.send_tensors(other, {"done": np.zeros(1, np.uint8)})
    seconds = time.monotonic() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss
    print(json.dumps(dict(role=role, seconds=seconds, cpu=usage.ru_utime + usage.ru_stime - base_cpu,
                          peak_rss=peak * 1024, rss_at_start=base_rss * 1024,
                          bytes_sent=comm.bytes_sent, shared=shared)), flush=True)
    comm.close()


def _run(mode: str, args) -> dict:
    ports = {"leader": _free_port(), "follower": _free_port()}
    procs = {}
    start = time.monotonic()
    for role in ("leader", "follower"):
        procs[role] = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--party", role, "--mode", mode, "--folder", args.folder,
             "--ports", json.dumps(ports), "--bucket_num", str(args.bucket_num), "--thread_num", str(args.thread_num)],
            stdout=subprocess.PIPE, stderr=None if args.verbose else subprocess.DEVNULL, text=True,
            env=dict(os.environ, PYTHONPATH=ROOT))
    results = {}
    for role, proc in procs.items():
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{mode}: {role} failed (rc {proc.returncode}); rerun with --verbose")
        results[role] = json.loads(out.strip().splitlines()[-1])
    results["wall"] = time.monotonic() - start
    return results


def _group_cost(samples: int = 3000) -> tuple:
    """CPU microseconds per id of hash_to_group and of one scalar multiplication (one thread)."""
    from mindspore_federated.data_join._group import Masker, hash_to_group

    ids = [f"device-{i:012d}" for i in range(samples)]
    masker = Masker()
    start = time.process_time()
    points = hash_to_group(ids)
    hashed = time.process_time()
    masker.mask(points)
    done = time.process_time()
    return (hashed - start) / samples * 1e6, (done - hashed) / samples * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ids", type=int, default=1_000_000, help="ids per party")
    parser.add_argument("--overlap", type=float, default=0.5, help="fraction of each party's ids that are shared")
    parser.add_argument("--bucket_num", type=int, default=8)
    parser.add_argument("--thread_num", type=int, default=2)
    parser.add_argument("--verbose", action="store_true", help="show the parties' logs")
    parser.add_argument("--party", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="psi", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--ports", type=json.loads, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.party:
        _party(args)
        return

    with tempfile.TemporaryDirectory(prefix="bench_data_join_") as folder:
        args.folder = folder
        _write_inputs(folder, args.ids, args.overlap)
        write_pki(os.path.join(folder, "pki"), "pw")
        print(f"{args.ids:,} ids per party, {args.overlap:.0%} shared, bucket_num {args.bucket_num}, "
              f"thread_num {args.thread_num}, {os.cpu_count()} CPUs, mutual TLS on loopback\n")
        rows = []
        for mode, label in (("plain", "plain hash join (insecure baseline)"), ("psi", "ECDH-PSI FLDataWorker")):
            result = _run(mode, args)
            expected = int(args.ids * args.overlap)
            for role in ("leader", "follower"):
                assert result[role]["shared"] == expected, (mode, role, result[role]["shared"], expected)
            rows.append((label, result))
        print("| method | wall s | CPU s leader / follower | peak RSS leader / follower (MiB) "
              "| sent leader / follower (MiB) |")
        print("|---|---|---|---|---|")
        for label, r in rows:
            print(f"| {label} | {r['wall']:.1f} | {r['leader']['cpu']:.1f} / {r['follower']['cpu']:.1f} | "
                  f"{r['leader']['peak_rss'] / 2**20:.0f} / "
                  f"{r['follower']['peak_rss'] / 2**20:.0f} | {r['leader']['bytes_sent'] / 2**20:.1f} / "
                  f"{r['follower']['bytes_sent'] / 2**20:.1f} |")
        hash_us, mult_us = _group_cost()
        print(f"\nlibsodium group operations, CPU per id and party: hash to group {hash_us:.0f} us, scalar "
              f"multiplication {mult_us:.0f} us (x2) = {hash_us + 2 * mult_us:.0f} us; "
              f"x {args.ids:,} ids = {(hash_us + 2 * mult_us) * args.ids / 1e6:.0f} CPU s per party")
        print(f"load average after the run (other processes on this machine): "
              f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
        print(f"PSI / plain wall time: {rows[1][1]['wall'] / rows[0][1]['wall']:.1f}x "
              f"(wall includes process start and imports, ~{rows[0][1]['leader']['rss_at_start'] / 2**20:.0f} "
              f"MiB RSS at start)")


if __name__ == "__main__":
    main()
