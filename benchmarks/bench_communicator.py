"""Throughput and latency of VerticalFederatedCommunicator over mutual TLS on loopback.

Run: ``.venv/bin/python benchmarks/bench_communicator.py [--sizes 16,256] [--chunk-mib 1]``

Two processes (sender = this one, receiver = a spawned child), certificates generated in a temp
dir. For each size it measures, in the same run and over the same TLS setup:

- ``communicator``: ``send_tensors`` of a float32 dict (4 tensors) -> ``receive`` on the peer,
  ``reps`` messages back to back, timed until the peer replied that it received all of them;
- ``bare gRPC``: a client-streaming gRPC call of the same number of bytes in the same chunk size,
  to a handler that only consumes the chunks: the transport's own ceiling;
- the same bare stream into a handler that copies the chunks into a fresh buffer of the message
  size, as any receiver that keeps the message must (shows what memory costs on this machine).

and the round trip of a small message (send -> peer receives and sends back -> receive).
The two are measured in alternating rounds and the median per-round ratio is reported, so that
load from other processes on the machine affects both alike. Prints a markdown table. Not a test: numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _peers import free_port as _free_port, ssl_config, write_pki  # noqa: E402  (benchmarks/ is on sys.path)

BARE_METHOD = "/bench.Bare/Stream"


def _ssl(pki: str, name: str):
    return ssl_config(pki, name, "bench")


def _receiver(pki: str, ports: dict, chunk: int, ready) -> None:
    from mindspore_federated import ServerConfig, VerticalFederatedCommunicator
    from mindspore_federated.communication.tls import load_tls_material
    import numpy as np
    from concurrent import futures

    def consume(request_iterator, context):
        n = sum(len(c) for c in request_iterator)
        return n.to_bytes(8, "little")

    def assemble(request_iterator, context):
        # what any receiver that keeps the message must do: copy it into a fresh buffer
        total = int(dict(context.invocation_metadata())["total"])
        buffer, n = np.empty(total, np.uint8), 0
        for c in request_iterator:
            buffer[n:n + len(c)] = np.frombuffer(c, np.uint8)
            n += len(c)
        return n.to_bytes(8, "little")

    me = ServerConfig("follower", f"127.0.0.1:{ports['follower']}")
    peer = ServerConfig("leader", f"127.0.0.1:{ports['leader']}")
    with VerticalFederatedCommunicator(me, peer, True, _ssl(pki, "follower"), chunk_size=chunk) as comm:
        import grpc  # after the communicator: it sets the TLS cipher suites before grpc loads
        material = load_tls_material(_ssl(pki, "follower"))
        bare = grpc.server(futures.ThreadPoolExecutor(4), options=[("grpc.max_receive_message_length", 32 << 20)],
                           handlers=[grpc.method_handlers_generic_handler("bench.Bare", {
                               "Stream": grpc.stream_unary_rpc_method_handler(consume),
                               "Assemble": grpc.stream_unary_rpc_method_handler(assemble)})])
        bare.add_secure_port(f"127.0.0.1:{ports['bare']}", grpc.ssl_server_credentials(
            [(material.server_key_pem, material.server_chain_pem)], material.ca_pem, True))
        bare.start()
        ready.set()
        while True:
            msg = comm.receive("leader")
            if "stop" in msg:
                break
            if "echo" in msg:
                comm.send_tensors("leader", msg)
                continue
            reps = int(msg["reps"].asnumpy())
            for _ in range(reps):
                comm.receive("leader")
            comm.send_tensors("leader", {"done": np.zeros(1, np.int32)})
        bare.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16,256", help="message sizes in MiB")
    parser.add_argument("--chunk-mib", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=6, help="interleaved repetitions (medians reported)")
    args = parser.parse_args()
    chunk = int(args.chunk_mib * (1 << 20))
    load = os.getloadavg()

    from mindspore_federated import ServerConfig, VerticalFederatedCommunicator
    from mindspore_federated.communication import codec
    from mindspore_federated.communication.tls import load_tls_material
    import numpy as np

    with tempfile.TemporaryDirectory() as pki:
        write_pki(pki, "bench")
        ports = {"leader": _free_port(), "follower": _free_port(), "bare": _free_port()}
        ctx = mp.get_context("spawn")
        ready = ctx.Event()
        child = ctx.Process(target=_receiver, args=(pki, ports, chunk, ready), daemon=True)
        child.start()
        if not ready.wait(120):
            raise SystemExit("receiver did not start")

        me = ServerConfig("leader", f"127.0.0.1:{ports['leader']}")
        peer = ServerConfig("follower", f"127.0.0.1:{ports['follower']}")
        rows = []
        with VerticalFederatedCommunicator(me, peer, True, _ssl(pki, "leader"), chunk_size=chunk) as comm:
            import grpc  # after the communicator: it sets the TLS cipher suites before grpc loads
            material = load_tls_material(_ssl(pki, "leader"))
            channel = grpc.secure_channel(f"127.0.0.1:{ports['bare']}", grpc.ssl_channel_credentials(
                material.ca_pem, material.client_key_pem, material.client_chain_pem),
                options=[("grpc.max_send_message_length", 32 << 20)])
            bare_call = channel.stream_unary(BARE_METHOD)
            assemble_call = channel.stream_unary(BARE_METHOD.replace("Stream", "Assemble"))

            def bare(payload: bytes, call=bare_call) -> None:
                view = memoryview(payload)
                chunks = (bytes(view[i:i + chunk]) for i in range(0, len(view), chunk))
                done = call(chunks, timeout=600, metadata=[("total", str(len(payload)))])
                assert int.from_bytes(done, "little") == len(payload)

            for mib in [int(s) for s in args.sizes.split(",")]:
                n = (mib << 20) // 4 // 4
                tensors = {f"w{i}": np.random.default_rng(i).standard_normal(n, dtype=np.float32)
                           for i in range(4)}
                reps = max(2, min(20, 512 // mib))
                payload = codec.dumps(tensors)
                ours, base, assembled = [], [], []

                def run_ours():
                    t = time.perf_counter()
                    comm.send_tensors("follower", {"reps": np.array(reps, np.int64)})
                    for _ in range(reps):
                        comm.send_tensors("follower", tensors)
                    comm.receive("follower", timeout=600)
                    ours.append(reps * len(payload) / (time.perf_counter() - t) / 2 ** 20)

                def run_bare():
                    t = time.perf_counter()
                    for _ in range(reps):
                        bare(payload)
                    base.append(reps * len(payload) / (time.perf_counter() - t) / 2 ** 20)

                def run_assembled():
                    t = time.perf_counter()
                    for _ in range(reps):
                        bare(payload, assemble_call)
                    assembled.append(reps * len(payload) / (time.perf_counter() - t) / 2 ** 20)

                runs = (run_ours, run_bare, run_assembled)
                for i in range(args.rounds):  # interleaved, order alternating: load drifts cancel
                    for run in (runs if i % 2 == 0 else runs[::-1]):
                        run()
                ratios = sorted(o / b for o, b in zip(ours, base))
                rows.append((f"{mib} MiB float32 dict", statistics.median(ours), statistics.median(base),
                             statistics.median(ratios), ratios[0], ratios[-1], statistics.median(assembled)))
            small = {"echo": np.arange(16, dtype=np.float32)}
            lat = []
            for _ in range(200):
                t = time.perf_counter()
                comm.send_tensors("follower", small)
                comm.receive("follower", timeout=60)
                lat.append((time.perf_counter() - t) * 1e3)
            comm.send_tensors("follower", {"stop": np.zeros(1, np.int32)})
        child.join(60)
        channel.close()

    print(f"\nchunk size {args.chunk_mib:g} MiB, TLS 1.3 on loopback, {os.cpu_count()} CPUs, "
          f"{args.rounds} interleaved rounds, medians; load average before/after: {load[0]:.1f}/"
          f"{os.getloadavg()[0]:.1f}\n")
    print("| message | communicator MiB/s | bare gRPC TLS stream MiB/s | ratio (median) | ratio range "
          "| bare stream + copy into a fresh buffer MiB/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, ours, base, ratio, low, high, assembled in rows:
        print(f"| {name} | {ours:.0f} | {base:.0f} | {ratio:.2f} | {low:.2f}-{high:.2f} | {assembled:.0f} |")
    print(f"\nsmall-message round trip (send -> peer receives, sends back -> receive): "
          f"median {statistics.median(lat):.2f} ms, p90 {sorted(lat)[int(len(lat) * 0.9)]:.2f} ms")


if __name__ == "__main__":
    main()
