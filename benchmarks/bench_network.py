"""Split PanGu-alpha over a real network (issue 13 benchmark; not a test).

Leader and follower run as two processes in two network namespaces (mindspore_federated.tools.netlab):
a veth pair limited to --rate each way by `tc tbf`, relays adding the round-trip time, mutual TLS
end to end. Measured in one run:

  * the one-process run (both parties in one process; with --compress the messages go through the
    codec) -- the baseline, measured before and after the network rows (drift on a shared machine);
  * two-process steps/s at each --rtts value, uncompressed and with `--compress min_max6` on both
    parties, as a ratio to the one-process run of the same compression; the losses of every network
    row are checked against the one-process run (identical, or the row says so);
  * the exchange alone: the five messages of a step with the same tensor sizes, between two small
    processes using the communicator (no model), ms per step at each RTT -- the network's own cost,
    little disturbed by other load on the machine;
  * the time from a party's death (kill -9, mid-training) to the other party's exit with an error,
    for each party killed.

Needs root, iproute2 (ip, tc). Steps/s is timed from the leader's loss log after --warmup steps.

    .venv/bin/python benchmarks/bench_network.py                        # small config, ~30 min on 2 busy cores
    .venv/bin/python benchmarks/bench_network.py --config tiny --steps 20 --rtts 0,20
    .venv/bin/python benchmarks/bench_network.py --only exchange          # the exchange alone, ~2 min
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example" / "splitnn_pangu_alpha"
sys.path.insert(0, str(ROOT))

from _timing import steps_per_second  # noqa: E402
from mindspore_federated.tools.netlab import NetLab, netlab_unavailable  # noqa: E402
from tests.example.netlab_parties import PARTIES, PASSWORD, LabParties, make_pki  # noqa: E402

COMPRESS = ("none", "min_max6")


def _common(args: argparse.Namespace, compress: str, steps: Optional[int] = None) -> List[str]:
    return ["--config", args.config, "--vocab_size", str(args.vocab_size), "--seed", "1", "--dropout_rate", "0",
            "--train_steps", str(steps or args.warmup + args.steps), "--log_steps", "1", "--save_ckpt_steps", "0",
            "--loss_scale", "1024", "--eval_steps", "1", "--compress", compress, "--run_config", "none"]


def run_local(args: argparse.Namespace, compress: str, tmp: Path) -> dict:
    """Both parties in one process (its own, so every row starts from a fresh MindSpore)."""
    out = tmp / f"local_{compress}_{time.monotonic_ns()}"
    log = out / "loss.json"
    cmd = [sys.executable, str(EXAMPLE / "run_pangu_train_local.py"), *_common(args, compress), "--synthetic",
           "--no_centralized", "--plot", "none", "--output_dir", str(out), "--log_file", "", "--loss_log", str(log)]
    proc = subprocess.run(cmd, cwd=str(EXAMPLE), capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), GLOG_v="3"))
    if proc.returncode:
        raise RuntimeError(f"one-process run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    records = json.loads(log.read_text())
    return {"steps_per_s": steps_per_second(records, args.warmup), "losses": [r["loss"] for r in records]}


def run_network(args: argparse.Namespace, rtt_ms: float, compress: str, pki: Path, tmp: Path) -> dict:
    with NetLab(rtt_ms=rtt_ms, rate=args.rate) as lab:
        parties = LabParties(lab, tmp / f"net_{rtt_ms:g}_{compress}", pki, _common(args, compress))
        parties.start_both()
        codes = parties.wait_both(args.timeout)
        relayed = lab.bytes_relayed
    if codes != (0, 0):
        raise RuntimeError(f"two-process run at {rtt_ms} ms failed ({codes}):\n{parties.tail('leader')}\n"
                           f"{parties.tail('follower')}")
    records = json.loads(parties.loss_log.read_text())
    return {"steps_per_s": steps_per_second(records, args.warmup), "losses": [r["loss"] for r in records],
            "relayed_per_step": relayed / len(records)}


# The five messages of one step (SPEC 3.1 plus the decision), tensors of the model's sizes.
_EXCHANGE = r"""
import json, sys, time
import numpy as np
import mindspore_federated  # before grpc
from mindspore_federated import CompressConfig, ServerConfig, SSLConfig, VerticalFederatedCommunicator
role, listen, dial, pki, b, s, h, compress, steps, warmup = sys.argv[1:11]
b, s, h, steps, warmup = int(b), int(s), int(h), int(steps), int(warmup)
peer = "follower" if role == "leader" else "leader"
pw = "{password}"
ssl = SSLConfig(pw, pw, f"{{pki}}/{{role}}_server.p12", f"{{pki}}/{{role}}_client.pem", f"{{pki}}/ca.pem")
configs = None
if compress == "min_max6":
    configs = {{"embedding_table": CompressConfig("min_max", 6), "hidden_states": CompressConfig("min_max", 6),
               "attention_mask": CompressConfig("bit_pack", 1)}}
rng = np.random.default_rng(0)
act = lambda: rng.standard_normal((b, s, h)).astype(np.float32)
mask = np.tril(np.ones((b, s, s), np.float32))
meta = lambda: {{"step": np.asarray(1), "norm": np.asarray(0.5, np.float32)}}
times = []
with VerticalFederatedCommunicator(ServerConfig(role, listen), ServerConfig(peer, dial), enable_ssl=True,
                                   ssl_config=ssl, compress_configs=configs) as comm:
    for step in range(steps):
        t0 = time.perf_counter()
        if role == "leader":
            comm.send_tensors(peer, {{"embedding_table": act(), "attention_mask": mask, "meta": meta()}})
            comm.receive(peer, timeout=600)
            comm.send_tensors(peer, {{"output": {{"hidden_states": act()}}}})
            comm.receive(peer, timeout=600)
            comm.send_tensors(peer, {{"meta": meta()}})
        else:
            comm.receive(peer, timeout=600)
            comm.send_tensors(peer, {{"hidden_states": act()}})
            comm.receive(peer, timeout=600)
            comm.send_tensors(peer, {{"hidden_states": {{"embedding_table": act()}}, "meta": meta()}})
            comm.receive(peer, timeout=600)
        times.append(time.perf_counter() - t0)
    if role == "follower":
        time.sleep(1.0)  # let the leader's last acknowledgement out before the server stops
print("EXCHANGE", json.dumps({{"ms_per_step": 1000 * float(np.median(times[warmup:]))}}), flush=True)
"""


def run_exchange(args: argparse.Namespace, rtt_ms: float, compress: str, pki: Path, shape: Sequence[int]) -> float:
    """Median ms per step of the five messages alone between two communicator processes."""
    script = _EXCHANGE.format(password=PASSWORD)
    steps = str(args.exchange_steps + 2)
    with NetLab(rtt_ms=rtt_ms, rate=args.rate) as lab:
        procs = {}
        for party in ("follower", "leader"):
            procs[party] = lab.popen(party, [sys.executable, "-c", script, party, lab.listen_address(party),
                                             lab.dial_address(party), str(pki), *map(str, shape), compress, steps,
                                             "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=dict(os.environ, PYTHONPATH=str(ROOT), GLOG_v="3"))
        out = {party: proc.communicate(timeout=args.timeout)[0] for party, proc in procs.items()}
    if any(proc.returncode for proc in procs.values()) or "EXCHANGE" not in out["leader"]:
        raise RuntimeError(f"exchange at {rtt_ms} ms failed:\n{out['leader'][-2000:]}\n{out['follower'][-2000:]}")
    return json.loads(out["leader"].split("EXCHANGE", 1)[1].strip().splitlines()[0])["ms_per_step"]


def _shape(args: argparse.Namespace) -> List[int]:
    """(batch, seq, hidden) of the --config preset."""
    sys.path.insert(0, str(EXAMPLE))
    from src.pangu_alpha_config import get_config  # pylint: disable=import-outside-toplevel
    config = get_config(args.config)
    return [config.batch_size, config.seq_length, config.hidden_size]


def run_death(args: argparse.Namespace, victim: str, pki: Path, tmp: Path) -> dict:
    """kill -9 ``victim`` mid-training; seconds until the other party exits, and its last words."""
    survivor = PARTIES[1 - PARTIES.index(victim)]
    steps = args.warmup + 1000  # never finishes by itself
    with NetLab(rtt_ms=args.death_rtt, rate=args.rate) as lab:
        parties = LabParties(lab, tmp / f"death_{victim}", pki, _common(args, "none", steps))
        parties.start_both()
        parties.wait_for_step(args.warmup + 1, timeout=args.timeout)
        parties.kill(victim)
        t0 = time.monotonic()
        try:
            code = parties.procs[survivor].wait(args.death_wait)
            seconds = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            code, seconds = None, None
        parties.kill_all()
    lines = [line for line in parties.output(survivor).splitlines() if line.strip()]
    last = next((line for line in reversed(lines) if "stopped" in line or "Error" in line), lines[-1] if lines else "")
    return {"victim": victim, "survivor": survivor, "seconds": seconds, "exit_code": code, "last_line": last}


def _mean_and_spread(values: Sequence[float]) -> str:
    mean = statistics.mean(values)
    return f"{mean:.3f}" + (f" ({min(values):.3f}-{max(values):.3f})" if len(values) > 1 else "")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small", help="PanGu-alpha preset (default small)")
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per run (default 12)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (compilation, caches; default 3)")
    parser.add_argument("--rtts", default="0,5,20,50", help="round-trip times in ms (default 0,5,20,50)")
    parser.add_argument("--rate", default="1gbit", help="link bandwidth each way (default 1gbit)")
    parser.add_argument("--death_rtt", type=float, default=5.0, help="RTT of the death-detection runs (default 5 ms)")
    parser.add_argument("--death_wait", type=float, default=150.0,
                        help="give up waiting for the survivor after this many seconds (default 150)")
    parser.add_argument("--exchange_steps", type=int, default=20, help="timed steps of the exchange alone (default 20)")
    parser.add_argument("--only", choices=("all", "training", "exchange", "death"), default="all",
                        help="run only one part (default all)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="bound on one training run (s)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    rtts = [float(x) for x in args.rtts.split(",") if x.strip()]
    why = netlab_unavailable()
    if why:
        parser.error(f"cannot build the network lab: {why}")

    def note(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    results: Dict[str, object] = {"local": {c: [] for c in COMPRESS}, "network": {}, "death": [],
                                  "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench_network_") as tmp_name:
        tmp = Path(tmp_name)
        pki = make_pki(tmp / "pki", NetLab(rate=args.rate))
        local: Dict[str, List[dict]] = results["local"]  # type: ignore[assignment]
        if args.only in ("all", "training"):
            for compress in COMPRESS:
                local[compress].append(run_local(args, compress, tmp))
                note(f"one process, --compress {compress}: {local[compress][-1]['steps_per_s']:.3f} steps/s")
            for rtt in rtts:
                for compress in COMPRESS:
                    row = run_network(args, rtt, compress, pki, tmp)
                    results["network"][f"{rtt:g}/{compress}"] = row  # type: ignore[index]
                    note(f"two processes, {rtt:g} ms RTT, --compress {compress}: {row['steps_per_s']:.3f} steps/s")
            for compress in COMPRESS:  # the baseline again: how much did the machine drift meanwhile
                local[compress].append(run_local(args, compress, tmp))
                note(f"one process again, --compress {compress}: {local[compress][-1]['steps_per_s']:.3f} steps/s")
        if args.only in ("all", "exchange"):
            shape = _shape(args)
            results["exchange"] = {f"{rtt:g}/{c}": run_exchange(args, rtt, c, pki, shape)
                                   for rtt in rtts for c in COMPRESS}
            note(f"exchange alone (ms/step): {results['exchange']}")
        if args.only in ("all", "death"):
            for victim in ("follower", "leader"):
                event = run_death(args, victim, pki, tmp)
                results["death"].append(event)  # type: ignore[union-attr]
                note(f"kill -9 {victim}: {event}")

    results["load_after"] = os.getloadavg()[0]
    print(f"\nCPU: {os.cpu_count()} cores, load average {results['load_before']:.1f} at the start, "
          f"{results['load_after']:.1f} at the end. Two processes in two network namespaces, {args.rate} each way "
          f"(tc tbf), mutual TLS.\n")
    if results["network"]:
        print(f"PanGu-alpha `{args.config}` (vocab {args.vocab_size}), {args.steps} timed steps after {args.warmup} "
              f"warm-up, synthetic data, dropout 0\n")
        print("| run | --compress | RTT (ms) | steps/s | vs one process | losses vs one process | link bytes/step |")
        print("|---|---|---:|---:|---:|---|---:|")
        base = {c: statistics.mean(r["steps_per_s"] for r in local[c]) for c in COMPRESS}
        for compress in COMPRESS:
            rates = [r["steps_per_s"] for r in local[compress]]
            print(f"| one process (before, after) | {compress} | - | {_mean_and_spread(rates)} | 1.00x | - | - |")
        for rtt in rtts:
            for compress in COMPRESS:
                row = results["network"][f"{rtt:g}/{compress}"]  # type: ignore[index]
                same = "identical" if row["losses"] == local[compress][0]["losses"] else "DIFFERENT"
                print(f"| two processes | {compress} | {rtt:g} | {row['steps_per_s']:.3f} | "
                      f"{row['steps_per_s'] / base[compress]:.2f}x | {same} | {row['relayed_per_step']:,.0f} |")
    if results.get("exchange"):
        exchange = results["exchange"]
        print(f"\nThe exchange alone (the five messages of a step, tensors of `{args.config}`'s sizes, two "
              f"communicator processes, no model): median ms per step over {args.exchange_steps} steps\n")
        print("| RTT (ms) | " + " | ".join(f"--compress {c}" for c in COMPRESS) + " | 3 x RTT |")
        print("|---:|" + "---:|" * (len(COMPRESS) + 1))
        for rtt in rtts:
            cells = " | ".join(f"{exchange[f'{rtt:g}/{c}']:.1f}" for c in COMPRESS)  # type: ignore[index]
            print(f"| {rtt:g} | {cells} | {3 * rtt:g} |")
    if results["death"]:
        print(f"\nkill -9 of one party mid-training ({args.death_rtt:g} ms RTT): time until the other party exits\n")
        print("| killed | the other party | exits after | exit code | its last log line (error if any) |")
        print("|---|---|---:|---:|---|")
        for event in results["death"]:  # type: ignore[union-attr]
            after = f"{event['seconds']:.1f} s" if event["seconds"] is not None else f"> {args.death_wait:g} s"
            line = event["last_line"].replace("|", "\\|")[:200]
            print(f"| {event['victim']} | {event['survivor']} | {after} | {event['exit_code']} | {line} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
