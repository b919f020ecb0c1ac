"""How long a party takes to learn that its peer is gone: SIGKILL, and a goodbye.

Run: ``.venv/bin/python benchmarks/bench_peer_death.py [--trials 5] [--liveness-timeout 6]``

Per trial, a child process runs a communicator (mutual TLS on loopback) that sends one message and
then waits; this process receives it, blocks in ``receive`` for the next one, and the child is
either killed with SIGKILL or says ``goodbye("benchmark")``. Reported: seconds from the kill (or
the goodbye request) to the ``ConnectionError`` of the blocked ``receive``; min / median / max over
the trials. Without liveness detection the receive would wait out its whole timeout (here 120 s).
Not a test: figures depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _peers import free_port as _free_port, ssl_config, write_pki  # noqa: E402  (benchmarks/ is on sys.path)


def _ssl(pki: str, name: str):
    return ssl_config(pki, name, "bench")


def _peer(pki: str, ports: dict, timeout: float, commands) -> None:
    import numpy as np
    from mindspore_federated import ServerConfig, VerticalFederatedCommunicator

    me = ServerConfig("follower", f"127.0.0.1:{ports['follower']}")
    leader = ServerConfig("leader", f"127.0.0.1:{ports['leader']}")
    with VerticalFederatedCommunicator(me, leader, True, _ssl(pki, "follower"), liveness_timeout=timeout) as comm:
        comm.send_tensors("leader", {"hello": np.ones(1)})
        commands.get()  # blocks until the goodbye request (or the kill)
        comm.goodbye("benchmark")
        time.sleep(60)


def _trial(pki: str, timeout: float, how: str) -> float:
    from mindspore_federated import ServerConfig, VerticalFederatedCommunicator

    ports = {"leader": _free_port(), "follower": _free_port()}
    ctx = mp.get_context("spawn")
    commands = ctx.Queue()
    child = ctx.Process(target=_peer, args=(pki, ports, timeout, commands), daemon=True)
    child.start()
    me = ServerConfig("leader", f"127.0.0.1:{ports['leader']}")
    peer = ServerConfig("follower", f"127.0.0.1:{ports['follower']}")
    with VerticalFederatedCommunicator(me, peer, True, _ssl(pki, "leader"), liveness_timeout=timeout) as comm:
        comm.receive("follower", timeout=120)
        time.sleep(2.0)  # heartbeats flowing both ways
        started = []

        def stop_peer():
            time.sleep(0.5)  # the main thread is blocked in receive by now
            started.append(time.monotonic())
            if how == "kill":
                child.kill()
            else:
                commands.put("goodbye")
        threading.Thread(target=stop_peer, daemon=True).start()
        try:
            comm.receive("follower", timeout=120)
            raise SystemExit("received a message instead of an error")
        except ConnectionError as err:
            elapsed = time.monotonic() - started[0]
            message = str(err)
    child.kill()
    child.join(10)
    print(f"  {how}: {elapsed:.2f} s  ({message[:110]}...)", flush=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--liveness-timeout", type=float, default=6.0,
                        help="the communicators' liveness_timeout (s); default as in the library")
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as pki:
        write_pki(pki, "bench")
        results = {how: [_trial(pki, args.liveness_timeout, how) for _ in range(args.trials)]
                   for how in ("kill", "goodbye")}
    print(f"\nliveness_timeout {args.liveness_timeout:g} s, {args.trials} trials, load average "
          f"{load[0]:.1f} at start\n")
    print("| peer stops by | min s | median s | max s |")
    print("|---|---:|---:|---:|")
    for how, label in (("kill", "SIGKILL (no goodbye)"), ("goodbye", "goodbye(reason)")):
        values = results[how]
        print(f"| {label} | {min(values):.2f} | {statistics.median(values):.2f} | {max(values):.2f} |")


if __name__ == "__main__":
    main()
