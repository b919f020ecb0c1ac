"""Token-recovery audit of the split example (issue 14), on a short real-text run.

The audit must really attack (far above chance when B receives bare embeddings, k = 0) and the
recommended setting must keep B's recovery within the goal (at most 2x chance) on the same text.
"""
from __future__ import annotations

import importlib.util
import os

import pytest

from tests.example.two_party import REPO

STEPS = 40


def _load_benchmark():
    path = os.path.join(REPO, "benchmarks", "audit_token_recovery.py")
    spec = importlib.util.spec_from_file_location("audit_token_recovery", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load_benchmark()


@pytest.fixture(scope="module")
def audit_env(bench, tmp_path_factory):
    """A's People's Daily slice as records, B's two reference corpora, a vocabulary trained on
    public text (the reviews and another People's Daily slice)."""
    from src.corpus import people_daily_documents, review_documents
    from src.tokenizer import train_sentencepiece
    work = tmp_path_factory.mktemp("audit")
    text = work / "vocab_text.txt"
    # 8000 pieces as in the example: small vocabularies split most words into "▁" + characters,
    # and that one piece alone would make the chance level ~20 %
    docs = bench._take(people_daily_documents(), 400_000) + bench._take(review_documents(), 200_000)
    text.write_text("\n".join(docs), encoding="utf-8")
    vocab = train_sentencepiece([str(text)], str(work / "sp"), vocab_size=8000)
    data = bench.build_data(str(work), vocab, 32, a_chars=40_000, ref_chars=200_000)
    opts = bench.parse_args(["--steps", str(STEPS), "--vocab_model", vocab, "--work_dir", str(work),
                             "--eval_steps", "2"])
    return opts, data


def _ratio(bench, report):
    refs = report["attacks"][report["best"]]["naming"]
    return max(bench._best(report, ref)["all"] for ref in refs) / report["chance"]["all"]


def test_audit_recovers_far_above_chance_at_the_embedding_split(bench, audit_env):
    opts, data = audit_env
    report = bench.run_setting(opts, bench.parse_setting("k=0"), data)
    best = report["attacks"][report["best"]]
    print(bench.table([report], {}))
    assert report["steps"] == STEPS and report["tokens"] == STEPS * 4 * 32
    assert best["ari"] > 0.9 and best["purity"] > 0.95          # B groups A's tokens almost exactly
    assert _ratio(bench, report) > 2.5, report["chance"]        # and names far more than chance
    assert 0.0 < report["chance"]["all"] < 0.2


def test_recommended_setting_keeps_recovery_within_the_goal(bench, audit_env):
    opts, data = audit_env
    report = bench.run_setting(opts, bench.parse_setting(bench.RECOMMENDED), data)
    print(bench.table([report], {}))
    assert _ratio(bench, report) <= 2.0, (bench.RECOMMENDED, report["best"], report["chance"])
