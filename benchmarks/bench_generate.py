"""PanGu-alpha generation speed and wire bytes (issue 11 benchmark; not a test).

Generates 128 tokens after a 128-token prompt (256 positions at the end) with the same random
weights in every layout, greedy, with and without the key/value cache (`use_past`):

  * centralised: the whole model in this process;
  * split, one process: party A here, party B's InferenceService called in memory;
  * split, two processes: party B = run_pangu_train_follower.py --run_type predict in its own
    process, party A in this one, over the communicator with mutual TLS on loopback.

Prints a markdown table: tokens/s and CPU milliseconds per token (a warm-up generation first, so
compilation is not timed; CPU time of both parties' processes, the steadier figure on a shared
machine), the cache's speed-up, the ratio to centralised with the cache, and the bytes A and B put
on the wire per generated token (protobuf payload; the prompt's one request not included).

    .venv/bin/python benchmarks/bench_generate.py                  # small model, seq 256, ~3 min on 2 cores
    .venv/bin/python benchmarks/bench_generate.py --config tiny --prompt_tokens 8 --new_tokens 16
    .venv/bin/python benchmarks/bench_generate.py --hidden_size 512 --num_layers 8 --prompt_tokens 192 \
        --new_tokens 64 --repeats 1 --no_tls      # a larger model: the cache's gain grows with it
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example" / "splitnn_pangu_alpha"
sys.path.insert(0, str(EXAMPLE))
PASSWORD = "bench-generate-pw"

from _peers import free_port as _free_port, write_pki  # noqa: E402  (benchmarks/ is on sys.path)

import mindspore_federated  # noqa: E402,F401  (before mindspore: protobuf backend)
import numpy as np  # noqa: E402
import mindspore as ms  # noqa: E402

from mindspore_federated.communication import codec  # noqa: E402


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _time_generation(generator: Any, prompt: List[int], new_tokens: int, config: Any, repeats: int,
                     pids: Tuple[int, ...] = ()) -> Tuple[float, float]:
    """(tokens per wall second, CPU ms per token of this process and `pids`) of greedy generation of
    exactly `new_tokens` tokens, best of `repeats` after a warm-up run (which compiles).

    The CPU figure is the steadier one on a shared machine: other jobs stretch the wall time, not it."""
    from src.generate import GenerateOptions, generate_ids
    options = GenerateOptions(max_generate_length=new_tokens, end_token=-1)
    best, best_cpu = float("inf"), float("inf")
    for i in range(repeats + 1):
        cpu0 = time.process_time() + sum(_cpu_seconds(p) for p in pids)
        t0 = time.perf_counter()
        try:
            out = generate_ids(generator, prompt, options, config.vocab_size, config.seq_length)
        finally:
            generator.close()
        wall = time.perf_counter() - t0
        cpu = time.process_time() + sum(_cpu_seconds(p) for p in pids) - cpu0
        if len(out) != new_tokens:
            raise RuntimeError(f"generated {len(out)} tokens instead of {new_tokens}")
        if i:
            best, best_cpu = min(best, wall), min(best_cpu, cpu)
    return new_tokens / best, 1000.0 * best_cpu / new_tokens


class _ByteCounter:
    """In-process transport that re-encodes every message like the communicator and counts bytes."""

    def __init__(self) -> None:
        self.sizes: List[int] = []

    def __call__(self, message: Dict) -> Dict:
        data = codec.dumps(message)
        self.sizes.append(len(data))
        return codec.loads(data)


def _tls_flags(pki: Path, name: str) -> List[str]:
    return ["--enable_ssl", "true", "--server_password", PASSWORD, "--client_password", PASSWORD,
            "--server_cert_path", str(pki / f"{name}_server.p12"), "--client_cert_path", str(pki / f"{name}_client.p12"),
            "--ca_cert_path", str(pki / "ca.pem")]


def _two_process_rates(args: argparse.Namespace, config: Any, run_dir: str, prompt: List[int], tmp: str) -> Dict:
    import run_pangu_train_leader
    from src.predict import LeaderModel
    from src.split_generate import RemoteBlocks
    from src.split_train import LEADER, make_communicator
    from mindspore_federated.inference import InferenceClient
    pki = Path(tmp) / "pki"
    write_pki(pki, PASSWORD)
    pl, pf = _free_port(), _free_port()
    model = ["--config", args.config, "--vocab_size", str(config.vocab_size), "--seq_length", str(config.seq_length),
             "--run_type", "predict", "--load_ckpt_path", run_dir, "--exec_mode", args.exec_mode]
    env = dict(os.environ, PYTHONPATH=str(ROOT), GLOG_v="3")
    follower_log = Path(tmp) / "follower.out"
    follower = subprocess.Popen([sys.executable, str(EXAMPLE / "run_pangu_train_follower.py"), *model,
                                 *_tls_flags(pki, "follower"), "--http_server_address", f"127.0.0.1:{pf}",
                                 "--remote_server_address", f"127.0.0.1:{pl}", "--log_file", ""],
                                cwd=str(EXAMPLE), env=env, stdout=open(follower_log, "w"), stderr=subprocess.STDOUT)
    largs = run_pangu_train_leader.parse_args(model + _tls_flags(pki, "leader") + [
        "--http_server_address", f"127.0.0.1:{pl}", "--remote_server_address", f"127.0.0.1:{pf}"])
    channel = make_communicator(largs, LEADER)
    rates = {}
    try:
        client = InferenceClient(channel.send, channel.recv)
        leader = LeaderModel(config, run_dir)
        for use_past in (True, False):
            gen = leader.generator(lambda: RemoteBlocks(client, config), use_past)
            rates[use_past] = _time_generation(gen, prompt, args.new_tokens, config, args.repeats, (follower.pid,))
        client.bye()
    finally:
        channel.close()
        try:
            follower.wait(60)
        finally:
            if follower.poll() is None:
                follower.kill()
    if follower.returncode != 0:
        raise RuntimeError(f"follower failed:\n{follower_log.read_text()[-3000:]}")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small")
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--prompt_tokens", type=int, default=128)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="timed generations per row (best is kept)")
    parser.add_argument("--no_tls", action="store_true", help="skip the two-process rows")
    parser.add_argument("--hidden_size", type=int, default=None, help="override the preset (heads: hidden / 64)")
    parser.add_argument("--num_layers", type=int, default=None, help="override the preset (query layer included)")
    parser.add_argument("--exec_mode", choices=("graph", "pynative"), default="graph",
                        help="MindSpore execution mode of party A and the centralised model (default graph, the "
                             "example's; party B's process reads config/main_job.yaml, graph too)")
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE if args.exec_mode == "graph" else ms.PYNATIVE_MODE, device_target="CPU")
    from src.pangu_alpha import PanguAlphaBackbone, init_weights
    from src.pangu_alpha_config import get_config
    from src.predict import central_generator, save_as_training_run, split_local_generator

    seq = args.prompt_tokens + args.new_tokens
    sizes = {}
    if args.hidden_size:
        sizes = dict(hidden_size=args.hidden_size, num_heads=max(1, args.hidden_size // 64),
                     ffn_hidden_size=4 * args.hidden_size)
    config = get_config(args.config, vocab_size=args.vocab_size, seq_length=seq, dropout_rate=0.0, batch_size=1,
                        num_layers=args.num_layers, **sizes)
    prompt = [int(t) for t in np.random.RandomState(0).randint(12, config.vocab_size, args.prompt_tokens)]
    rows: Dict[str, Dict[bool, Tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        whole = PanguAlphaBackbone(config)
        init_weights(whole, 1, 0.1, prefix="backbone.")
        save_as_training_run(whole, tmp)
        for use_past in (True, False):
            gen, _ = central_generator(config, tmp, use_past)
            rows.setdefault("centralised", {})[use_past] = _time_generation(gen, prompt, args.new_tokens, config,
                                                                           args.repeats)
            gen, _, _ = split_local_generator(config, tmp, use_past)
            rows.setdefault("split, one process", {})[use_past] = _time_generation(gen, prompt, args.new_tokens,
                                                                                  config, args.repeats)
        wire: Dict[bool, float] = {}
        for use_past in (True, False):  # bytes: every message through the codec, both directions
            counter = _ByteCounter()
            gen, _, _ = split_local_generator(config, tmp, use_past, transport=counter)
            _time_generation(gen, prompt, args.new_tokens, config, 0)
            # per generation: OPEN + reply, prompt request + reply, one request + reply per token, CLOSE + reply
            per_token = counter.sizes[4:-2]
            wire[use_past] = sum(per_token) / args.new_tokens
        if not args.no_tls:
            rows["split, two processes (mutual TLS)"] = _two_process_rates(args, config, tmp, prompt, tmp)
    base_wall, base_cpu = rows["centralised"][True]
    print(f"PanGu-alpha `{args.config}`, {args.exec_mode} mode (vocab {config.vocab_size}, hidden {config.hidden_size}, "
          f"{config.num_layers} layers, seq_length {seq}), CPU, greedy, {args.prompt_tokens}-token prompt, "
          f"{args.new_tokens} generated tokens, best of {args.repeats} after a warm-up generation. CPU ms/token "
          f"counts both parties' processes.\n")
    print("| layout | tokens/s, cache | tokens/s, no cache | CPU ms/token, cache | CPU ms/token, no cache | "
          "cache speed-up (wall / CPU) | vs centralised, cache (wall / CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, rate in rows.items():
        (wall_c, cpu_c), (wall_n, cpu_n) = rate[True], rate[False]
        print(f"| {name} | {wall_c:.1f} | {wall_n:.1f} | {cpu_c:.1f} | {cpu_n:.1f} | {wall_c / wall_n:.1f}x / "
              f"{cpu_n / cpu_c:.1f}x | {wall_c / base_wall:.2f}x / {base_cpu / cpu_c:.2f}x |")
    h = config.hidden_size
    print(f"\nWire bytes per generated token (A->B + B->A, protobuf payload): with cache {wire[True]:,.0f} "
          f"(the two hidden-state vectors alone: {2 * 4 * h:,}), without cache {wire[False]:,.0f}")


if __name__ == "__main__":
    main()
