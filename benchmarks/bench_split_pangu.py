"""Split PanGu-alpha throughput, wire bytes and memory (issue 5 benchmark; not a test).

Runs, each in its own process so peak RSS is per party:
  * centralised training, graph and PyNative mode (train_centralized's one-step cell);
  * split training with both parties in one process (in-memory channel), PyNative (`split_local`,
    forward jit-compiled, FLModel reuses the autodiff tape) and graph mode (`split_local_graph`,
    FLModel's compiled backward + optimizer);
  * split training in two processes over mutual TLS on loopback (certificates made here), in both
    modes (`split_tls`, `split_tls_graph`);
  * party B as two pipeline stages (`--pipeline_stages 2`, graph mode): A + B1 + B2 in one process
    (`pipeline_local_graph`) and as three processes over mutual TLS (`pipeline_tls_graph`);
With `--rounds R` the modes run in turn R times (rounds alternate, so a machine whose load changes
affects every mode alike); each ratio is taken within a round, and the table shows medians.
It prints a markdown table: steps/s (timed after the warm-up steps), the bytes each step puts on
the wire (protobuf payload of the five messages) next to the theoretical minimum (embedding
activations, hidden states, their two gradients, plus the attention mask), and peak RSS.

    .venv/bin/python benchmarks/bench_split_pangu.py                 # small config, ~5 min on 2 cores
    .venv/bin/python benchmarks/bench_split_pangu.py --config 350M --steps 3 --warmup 1 --modes split_local,central_pynative
    .venv/bin/python benchmarks/bench_split_pangu.py --modes central_graph,split_local_graph,split_tls_graph --rounds 3
    .venv/bin/python benchmarks/bench_split_pangu.py --modes split_local_graph,pipeline_local_graph,split_tls_graph,pipeline_tls_graph --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from _peers import free_port as _free_port, write_pki  # benchmarks/ is on sys.path when run as a script
from _timing import steps_per_second

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example" / "splitnn_pangu_alpha"
PASSWORD = "bench-pw"
MODES = ("central_graph", "central_pynative", "split_local", "split_tls", "split_local_graph", "split_tls_graph",
         "pipeline_local_graph", "pipeline_tls_graph")
NAMES = {"central_graph": "centralised, graph mode", "central_pynative": "centralised, PyNative + jit forward",
         "split_local": "split, one process (A+B), PyNative + jit forward",
         "split_tls": "split, two processes, mutual TLS, PyNative + jit forward",
         "split_local_graph": "split, one process (A+B), graph mode",
         "split_tls_graph": "split, two processes, mutual TLS, graph mode",
         "pipeline_local_graph": "split, B as 2 pipeline stages, one process (A+B1+B2), graph mode",
         "pipeline_tls_graph": "split, B as 2 pipeline stages, three processes, mutual TLS, graph mode"}
# (numerator, denominator) of the ratios the goals are about, each taken within one round
RATIOS = (("split_local_graph", "central_graph"), ("split_tls_graph", "split_local_graph"),
          ("split_local", "central_graph"), ("split_tls", "split_local"),
          ("split_local_graph", "split_local"), ("pipeline_local_graph", "split_local_graph"),
          ("pipeline_tls_graph", "split_tls_graph"), ("pipeline_tls_graph", "pipeline_local_graph"))


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _exec_mode(mode: str) -> List[str]:
    """The split programs' execution mode (and pipeline stages) for a benchmark mode name."""
    return (["--exec_mode", "graph" if mode.endswith("_graph") else "pynative"] +
            (["--pipeline_stages", "2"] if mode.startswith("pipeline_") else []))


def _common(args: argparse.Namespace) -> List[str]:
    batch = ["--per_batch_size", str(args.batch_size)] if args.batch_size else []
    batch += ["--seq_length", str(args.seq_length)] if args.seq_length else []
    return ["--config", args.config, "--vocab_size", str(args.vocab_size), "--seed", "1", "--dropout_rate", "0",
            "--train_steps", str(args.warmup + args.steps), "--log_steps", str(max(1, args.warmup + args.steps)),
            "--save_ckpt_steps", "0", "--loss_scale", "1024", "--run_config", "none", *batch]


# ------------------------------------------------------------------------------ workers
def worker_central(args: argparse.Namespace, mode: str) -> dict:
    sys.path.insert(0, str(EXAMPLE))
    import mindspore_federated  # noqa: F401
    import train_centralized as tc
    from src.utils import config_from_args, synthetic_batch
    targs = tc.parse_args(_common(args) + ["--synthetic", "--exec_mode", mode])
    tc.set_context(targs)
    config = config_from_args(targs)
    total = args.warmup + args.steps
    _, _, cell, _ = tc.build_training(config, total)
    times = []
    for step in range(total):
        batch = synthetic_batch(step, config.batch_size, config.seq_length, config.vocab_size, config.eod_id)
        t0 = time.time()
        loss, _, _ = cell(*tc.to_tensors(batch))
        float(loss.asnumpy())
        times.append(time.time() - t0)
    measured = times[args.warmup:]
    return {"steps_per_s": len(measured) / sum(measured), "rss_mib": _rss_mib()}


def worker_split_local(args: argparse.Namespace, out: str, mode: str) -> dict:
    sys.path.insert(0, str(EXAMPLE))
    import mindspore_federated  # noqa: F401
    import run_pangu_train_local
    from mindspore_federated.protocol import Kind
    from src.split_train import run_local
    log = os.path.join(out, "local_loss.json")
    largs = run_pangu_train_local.parse_args(_common(args) + _exec_mode(mode) + [
        "--synthetic", "--output_dir", out, "--loss_log", log, "--log_file", "", "--eval_steps", "0"])
    res = run_local(largs, measure=True)
    train_kinds = {Kind.FORWARD, Kind.FORWARD_REPLY, Kind.BACKWARD, Kind.BACKWARD_REPLY, Kind.DECISION}
    sent = res["channel"].sent_log + res["follower"].channel.sent_log
    per_step = sum(size for kind, size in sent if kind in train_kinds) / len(res["losses"])
    with open(log, encoding="utf-8") as f:
        records = json.load(f)
    cfg = res["config"]
    b, s, h = cfg.batch_size, cfg.seq_length, cfg.hidden_size
    minimum = 4 * (b * s * h * 4) + b * s * s * 4
    result = {"steps_per_s": steps_per_second(records, args.warmup), "rss_mib": _rss_mib(), "wire_bytes": per_step,
              "min_bytes": minimum}
    if len(res["stages"]) > 1:   # the B1 <-> B2 link
        inner = res["stages"][0].downstream.channel.sent_log + res["stages"][1].channel.sent_log
        result["stage_link_bytes"] = sum(size for kind, size in inner if kind in train_kinds) / len(res["losses"])
    return result


def run_split_tls(args: argparse.Namespace, tmp: str, mode: str) -> dict:
    """The leader and party B (one follower, or two pipeline stages) as processes over mutual TLS."""
    pki = Path(tmp) / "pki"
    stages = 2 if mode.startswith("pipeline_") else 1
    names = ["follower", "follower2"][:stages]
    write_pki(pki, PASSWORD, names=("leader", *names))
    pl, ports = _free_port(), [_free_port() for _ in names]

    def tls(name: str) -> List[str]:
        return ["--enable_ssl", "true", "--server_password", PASSWORD, "--client_password", PASSWORD,
                "--server_cert_path", str(pki / f"{name}_server.p12"),
                "--client_cert_path", str(pki / f"{name}_client.p12"), "--ca_cert_path", str(pki / "ca.pem")]

    rss_probe = ("import resource,runpy,sys,json; sys.argv=[sys.argv[1]]+sys.argv[2:]\n"
                 "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
                 "finally:\n    print('RSS-MIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024.0, flush=True)")
    log = os.path.join(tmp, "tls_loss.json")
    env = dict(os.environ, PYTHONPATH=str(ROOT), GLOG_v="3")
    followers = []
    for i, name in enumerate(names):
        upstream = pl if i == 0 else ports[i - 1]
        nxt = ["--stage_index", str(i)] + (["--next_stage_address", f"127.0.0.1:{ports[i + 1]}"]
                                           if i + 1 < stages else [])
        followers.append(subprocess.Popen(
            [sys.executable, "-c", rss_probe, str(EXAMPLE / "run_pangu_train_follower.py"),
             "--http_server_address", f"127.0.0.1:{ports[i]}", "--remote_server_address", f"127.0.0.1:{upstream}",
             *_common(args), *_exec_mode(mode), *nxt, "--output_dir", tmp, "--log_file", "", *tls(name)],
            cwd=str(EXAMPLE), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    leader = subprocess.Popen(
        [sys.executable, "-c", rss_probe, str(EXAMPLE / "run_pangu_train_leader.py"),
         "--http_server_address", f"127.0.0.1:{pl}", "--remote_server_address", f"127.0.0.1:{ports[0]}",
         *_common(args), *_exec_mode(mode), "--synthetic", "--output_dir", tmp, "--log_file", "", "--loss_log", log,
         "--eval_steps", "0", *tls("leader")],
        cwd=str(EXAMPLE), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out_l, _ = leader.communicate(timeout=3600)
    outs = [f.communicate(timeout=600)[0] for f in followers]
    if leader.returncode or any(f.returncode for f in followers):
        raise RuntimeError(f"{mode} failed:\n{out_l[-2000:]}\n" + "\n".join(o[-2000:] for o in outs))
    rss = lambda text: float(text.rsplit("RSS-MIB", 1)[1].split()[0])  # noqa: E731
    with open(log, encoding="utf-8") as f:
        records = json.load(f)
    return {"steps_per_s": steps_per_second(records, args.warmup), "rss_leader_mib": rss(out_l),
            **{f"rss_{name}_mib": rss(out) for name, out in zip(names, outs)}}


def _in_child(mode: str, args: argparse.Namespace, tmp: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--config", args.config, "--vocab_size", str(args.vocab_size),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--tmp", tmp,
           "--batch_size", str(args.batch_size or 0), "--seq_length", str(args.seq_length or 0)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT), GLOG_v="3"))
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{mode} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small")
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--batch_size", type=int, default=0, help="sequences per step (default: the config's)")
    parser.add_argument("--seq_length", type=int, default=0, help="tokens per sequence (default: the config's)")
    parser.add_argument("--steps", type=int, default=12, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (compilation, caches)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--rounds", type=int, default=1, help="run the modes in turn this many times")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if args.worker.startswith("central_"):
            result = worker_central(args, args.worker.split("_", 1)[1])
        else:
            result = worker_split_local(args, args.tmp, args.worker)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"--modes: unknown {', '.join(unknown)} (choose from {', '.join(MODES)})")
    rounds: List[Dict[str, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            results: Dict[str, dict] = {}
            for mode in modes:
                t0 = time.time()
                results[mode] = run_split_tls(args, tmp, mode) if "_tls" in mode else \
                    _in_child(mode, args, tmp)
                print(f"round {r + 1}/{args.rounds} {mode}: {results[mode]} ({time.time() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
            rounds.append(results)

    def median(values: List[float]) -> float:
        return float(statistics.median(values))

    merged = {mode: {key: median([rd[mode][key] for rd in rounds]) for key in rounds[0][mode]} for mode in modes}
    base = merged.get("central_graph", merged.get("central_pynative"))
    pyn = merged.get("central_pynative")
    batch = (f", batch {args.batch_size}" if args.batch_size else "") + (f", seq {args.seq_length}" if args.seq_length else "")
    print(f"\nPanGu-alpha `{args.config}` (vocab {args.vocab_size}{batch}), CPU, {args.steps} timed steps after "
          f"{args.warmup} warm-up steps, synthetic data, dropout 0, median of {args.rounds} round(s).\n")
    print("| run | steps/s | vs centralised graph | vs centralised PyNative | peak RSS (MiB) |")
    print("|---|---|---|---|---|")
    for mode, r in merged.items():
        rss = (f"A {r['rss_leader_mib']:.0f} / B {r['rss_follower_mib']:.0f}" if "rss_leader_mib" in r
               else f"{r['rss_mib']:.0f}")
        if "rss_follower2_mib" in r:
            rss = rss.replace("/ B", "/ B1") + f" / B2 {r['rss_follower2_mib']:.0f}"
        vs = lambda ref: f"{r['steps_per_s'] / ref['steps_per_s']:.2f}x" if ref else "-"  # noqa: E731
        print(f"| {NAMES[mode]} | {r['steps_per_s']:.3f} | {vs(base)} | {vs(pyn)} | {rss} |")
    pairs = [(a, b) for a, b in RATIOS if a in modes and b in modes]
    if pairs:
        print("\nRatios of steps/s within each round (median; per round):\n")
        for a, b in pairs:
            per_round = [rd[a]["steps_per_s"] / rd[b]["steps_per_s"] for rd in rounds]
            print(f"- {NAMES[a]} / {NAMES[b]}: **{median(per_round):.2f}x** "
                  f"({', '.join(f'{x:.2f}' for x in per_round)})")
    local = merged.get("split_local", merged.get("split_local_graph"))
    if local:
        print(f"\nWire bytes per training step (protobuf payload of the 5 messages): {local['wire_bytes']:,.0f}; "
              f"theoretical minimum (4 activation/gradient tensors + mask, fp32): {local['min_bytes']:,.0f} "
              f"-> {local['wire_bytes'] / local['min_bytes']:.4f}x")
    if "pipeline_local_graph" in merged:
        print(f"Party A's link with B as 2 pipeline stages: {merged['pipeline_local_graph']['wire_bytes']:,.0f} "
              f"bytes per training step (the relay forwards B2's output and B2's share of the statistics); "
              f"the B1 <-> B2 link: {merged['pipeline_local_graph']['stage_link_bytes']:,.0f}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
