"""Split PanGu-alpha over a real network (issue 13 benchmark; not a test).

Leader and follower run as two processes in two network namespaces (mindspore_federated.tools.netlab):
a veth pair limited to --rate each way by `tc tbf`, relays adding the round-trip time, mutual TLS
end to end. Measured in one run:

  * the one-process run (both parties in one process; with --compress the messages go through the
    codec) -- the baseline, measured before and after the network rows (drift on a shared machine);
  * two-process steps/s at each --rtts value, uncompressed and with `--compress min_max6` on both
    parties, as a ratio to the one-process run of the same compression; the losses of every network
    row are checked against the one-process run (identical, or the row says so);
  * the time from a party's death (kill -9, mid-training) to the other party's exit with an error,
    for each party killed.

Needs root, iproute2 (ip, tc). Steps/s is timed from the leader's loss log after --warmup steps.

    .venv/bin/python benchmarks/bench_network.py                        # small config, ~10 min on 2 cores
    .venv/bin/python benchmarks/bench_network.py --config tiny --steps 20 --rtts 0,20
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
from tests.example.netlab_parties import PARTIES, LabParties, make_pki  # noqa: E402

COMPRESS = ("none", "min_max6")


def _common(args: argparse.Namespace, compress: str, steps: Optional[int] = None) -> List[str]:
    return ["--config", args.config, "--vocab_size", str(args.vocab_size), "--seed", "1", "--dropout_rate", "0",
            "--train_steps", str(steps or args.warmup + args.steps), "--log_steps", "1", "--save_ckpt_steps", "0",
            "--loss_scale", "1024", "--eval_steps", "1", "--compress", compress]


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
    parser.add_argument("--skip_death", action="store_true", help="only the throughput rows")
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
        if not args.skip_death:
            for victim in ("follower", "leader"):
                event = run_death(args, victim, pki, tmp)
                results["death"].append(event)  # type: ignore[union-attr]
                note(f"kill -9 {victim}: {event}")

    results["load_after"] = os.getloadavg()[0]
    print(f"\nPanGu-alpha `{args.config}` (vocab {args.vocab_size}), CPU ({os.cpu_count()} cores, load average "
          f"{results['load_before']:.1f} at the start, {results['load_after']:.1f} at the end), {args.steps} timed "
          f"steps after {args.warmup} warm-up, synthetic data, dropout 0; two processes in two network namespaces, "
          f"{args.rate} each way (tc tbf), mutual TLS.\n")
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
