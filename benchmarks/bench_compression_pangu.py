"""Compression and EmbeddingDP on the split PanGu-alpha: wire bytes, final loss, codec time (issue 6).

Not a test. Runs the split training in ONE process with every message passed through the codec
exactly as the communicator encodes it (`run_pangu_train_local.py --wire`): the bytes are the real
protobuf payload of the five messages per step (gRPC/TLS framing not counted), the tensors each
party receives are the decoded ones, and the encode+decode time is measured around the codec calls.
Each variant runs in its own process with the same seed, synthetic data and initial weights:

  none      yaml/*.yaml (uncompressed; still through the codec, for the time comparison)
  fp16      yaml/*_compressed.yaml with fp16 casts on the activations and gradients
  min_max8  ... with 8-bit min_max
  min_max6  yaml/*_compressed.yaml as written (6-bit min_max, 1-bit bit_pack mask)
  dp        --embedding_dp (1-bit EmbeddingDP activations A->B, no eps), rest uncompressed

    .venv/bin/python benchmarks/bench_compression_pangu.py --config small --steps 200
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example" / "splitnn_pangu_alpha"
VARIANTS = {"none": [], "fp16": ["--compress", "fp16"], "min_max8": ["--compress", "min_max8"],
            "min_max6": ["--compress", "min_max6"], "dp": ["--embedding_dp"]}
LABELS = {"none": "no compression", "fp16": "fp16", "min_max8": "min_max 8 bit", "min_max6": "min_max 6 bit",
          "dp": "EmbeddingDP (1 bit, no eps)"}


def worker(args: argparse.Namespace) -> dict:
    """One variant; prints its result as JSON (own process: fresh MindSpore state, same seed)."""
    sys.path.insert(0, str(EXAMPLE))
    import mindspore_federated  # noqa: F401  # pylint: disable=unused-import  (before mindspore)
    import run_pangu_train_local
    from src.split_train import run_local
    out = tempfile.mkdtemp(prefix="bench_compress_")
    largs = run_pangu_train_local.parse_args(
        ["--config", args.config, "--vocab_size", str(args.vocab_size), "--seed", "1", "--dropout_rate", "0",
         "--train_steps", str(args.steps), "--log_steps", str(max(args.steps // 5, 1)), "--save_ckpt_steps", "0",
         "--synthetic", "--exec_mode", "pynative", "--output_dir", out, "--wire", "--run_config", "none",
         *VARIANTS[args.variant]])
    largs.eval_data_url = None
    largs.synthetic = True
    t0 = time.perf_counter()
    res = run_local(largs)
    wall = time.perf_counter() - t0
    a_to_b = [a for a, _ in res["wire_bytes"]]
    b_to_a = [b for _, b in res["wire_bytes"]]
    codec = res["channel"].codec_seconds + res["follower_channel"].codec_seconds
    steps = len(res["losses"])
    return {"variant": args.variant, "losses": res["losses"], "steps": steps,
            "bytes_per_step": (sum(a_to_b) + sum(b_to_a)) / steps,
            "a_to_b": sum(a_to_b) / steps, "b_to_a": sum(b_to_a) / steps,
            "step_s": 1.0 / res["steps_per_second"], "codec_s_per_step": codec / steps, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--last", type=int, default=20, help="final loss = mean of the last N steps")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="also write the raw results here")
    args = parser.parse_args()
    if args.variant:
        print("BENCH-RESULT " + json.dumps(worker(args)), flush=True)
        return
    results: Dict[str, dict] = {}
    for variant in args.variants.split(","):
        cmd = [sys.executable, __file__, "--variant", variant, "--config", args.config,
               "--vocab_size", str(args.vocab_size), "--steps", str(args.steps)]
        proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "GLOG_v": "3"})
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH-RESULT ")]
        if proc.returncode or not line:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit(f"variant {variant} failed")
        results[variant] = json.loads(line[0].split(" ", 1)[1])
        sys.stderr.write(f"{variant}: done in {results[variant]['wall_s']:.0f} s\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results))
    print(table(results, args))


def table(results: Dict[str, dict], args: argparse.Namespace) -> str:
    base = results.get("none")
    lines: List[str] = [
        f"PanGu-alpha `{args.config}` (vocab {args.vocab_size}), split in one process with every message "
        f"through the codec, {args.steps} steps, seed 1, synthetic data, dropout 0, CPU (2 shared cores).",
        "",
        "| variant | bytes/step (A->B + B->A) | vs none | final loss (mean last "
        f"{args.last}) | vs none | step time (ms) | encode+decode per step (ms) | codec share of step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, res in results.items():
        final = sum(res["losses"][-args.last:]) / len(res["losses"][-args.last:])
        ratio = res["bytes_per_step"] / base["bytes_per_step"] if base else float("nan")
        if base:
            base_final = sum(base["losses"][-args.last:]) / len(base["losses"][-args.last:])
            dloss = f"{(final - base_final) / base_final * 100:+.2f} %"
        else:
            dloss = "-"
        lines.append(f"| {LABELS.get(name, name)} | {res['bytes_per_step']:,.0f} ({res['a_to_b']:,.0f} + "
                     f"{res['b_to_a']:,.0f}) | {ratio:.3f}x | {final:.4f} | {dloss} | {res['step_s'] * 1e3:.0f} | "
                     f"{res['codec_s_per_step'] * 1e3:.2f} | {res['codec_s_per_step'] / res['step_s'] * 100:.1f} % |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
