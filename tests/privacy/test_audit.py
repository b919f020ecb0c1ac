"""The audit's parts on data with a known answer (no training: fast)."""
from __future__ import annotations

import numpy as np
import pytest

from mindspore_federated.privacy import EmbeddingDP
from mindspore_federated.privacy.audit import (ReceivedTensorRecorder, ReferenceModel, adjusted_rand_index,
                                               apply_names, chance_recovery, link_activations, name_by_frequency,
                                               positions_from_mask, purity, refine_with_bigrams, token_recovery)


def test_ari_and_purity_against_hand_counts():
    truth = np.array([0, 0, 0, 1, 1, 2])
    # pred merges classes 1 and 2 -> contingency [[3,0],[0,2],[0,1]]
    pred = np.array([5, 5, 5, 7, 7, 7])
    # index = C(3,2)+C(2,2) = 4; a = 3+1 = 4; b = 3+3 = 6; total 15; expected 1.6; max 5
    assert adjusted_rand_index(truth, pred) == pytest.approx((4 - 1.6) / (5 - 1.6))
    assert adjusted_rand_index(truth, truth + 10) == pytest.approx(1.0)
    assert purity(truth, pred) == pytest.approx(5 / 6)
    assert purity(truth, np.arange(6)) == 1.0


def test_recovery_and_chance():
    truth = np.array([1, 1, 1, 2, 2, 3, 4, 5])
    assert chance_recovery(truth) == pytest.approx(3 / 8)
    assert chance_recovery(truth, top=2) == pytest.approx(3 / 5)
    guess = np.array([1, 1, 0, 2, 0, 3, 0, 0])
    assert token_recovery(truth, guess) == pytest.approx(4 / 8)
    assert token_recovery(truth, guess, top=2) == pytest.approx(3 / 5)


def test_positions_from_mask_follow_eod_resets():
    """SPEC §3 example: ids 11 12 6 13 14 6 15 16 -> positions 0 1 2 0 1 2 0 1."""
    doc = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    mask = (np.tril(np.ones((8, 8))) * (doc[:, None] == doc[None, :]))[None]
    np.testing.assert_array_equal(positions_from_mask(mask)[0], [0, 1, 2, 0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match=r"expected \[\.\.\., S, S\]"):
        positions_from_mask(np.ones((2, 3)))


def _sum_of_tables(steps=12, batch=4, seq=16, vocab=40, dim=32, drift=0.002, seed=0):
    """What B receives at the embedding split: W[token] + P[position], weights drifting per step."""
    rng = np.random.default_rng(seed)
    w, p = rng.normal(0, 0.02, (vocab, dim)), rng.normal(0, 0.02, (seq, dim))
    freq = 1.0 / np.arange(1, vocab + 1)
    tokens = rng.choice(vocab, size=(steps, batch, seq), p=freq / freq.sum())
    acts = np.empty((steps, batch * seq, dim))
    for s in range(steps):
        w += rng.normal(0, drift, w.shape)
        p += rng.normal(0, drift / 2, p.shape)
        acts[s] = (w[tokens[s]] + p[None, :, :]).reshape(-1, dim)
    positions = np.tile(np.arange(seq), (steps, batch))
    return acts, positions, tokens.reshape(steps, -1)


def test_linking_recovers_the_partition_of_embedding_sums():
    acts, positions, tokens = _sum_of_tables()
    labels = link_activations(acts, positions, radius=0.05)
    assert adjusted_rand_index(tokens, labels) > 0.98
    assert purity(tokens, labels) > 0.98
    # without position correction the same tokens at different positions would never meet
    per_position = positions * 1000 + tokens
    assert adjusted_rand_index(tokens, per_position) < 0.5


def test_linking_fails_on_unrelated_vectors():
    acts, positions, tokens = _sum_of_tables()
    noise = np.random.default_rng(1).normal(0, 0.03, acts.shape)
    labels = link_activations(noise, positions, radius=0.05)
    assert abs(adjusted_rand_index(tokens, labels)) < 0.05


def test_linking_one_bit_codes_beats_chance():
    acts, positions, tokens = _sum_of_tables(steps=20, drift=0.0)
    codes = EmbeddingDP(eps=None)(acts.astype(np.float32))
    # codes of one token at two positions differ in ~1/3 of the bits, of two tokens in ~1/2
    labels = link_activations(codes, positions, radius=4.0)
    assert adjusted_rand_index(tokens, labels) > 0.6


def _text(n, vocab=60, seed=0):
    """Zipf-distributed tokens with bigram structure (each token favours two successors)."""
    rng = np.random.default_rng(123)                   # the language: the same for every text
    trans = np.tile(1.0 / np.arange(1, vocab + 1), (vocab, 1))
    for a in range(vocab):
        trans[a, rng.choice(vocab, 2, replace=False)] += 1.5
    trans /= trans.sum(1, keepdims=True)
    rng = np.random.default_rng(seed)
    out = [0]
    for _ in range(n - 1):
        out.append(int(rng.choice(vocab, p=trans[out[-1]])))
    return np.array(out)


def test_naming_a_substitution_cipher_with_public_text():
    reference = ReferenceModel([_text(40000, seed=1)])
    secret = _text(4000, seed=2).reshape(100, 40)
    cipher = (secret * 7 + 3) % 101                       # class ids: an unknown relabelling
    by_frequency = token_recovery(secret, apply_names(cipher, name_by_frequency(cipher, reference)))
    refined = token_recovery(secret, apply_names(
        cipher, refine_with_bigrams(cipher, name_by_frequency(cipher, reference), reference)))
    chance = chance_recovery(secret)                      # 0.18
    assert 2 * chance < by_frequency < refined
    assert refined > 0.9


class _Inbox:
    def __init__(self, messages):
        self.messages = list(messages)
        self.closed = False

    def recv(self, timeout=None):
        return self.messages.pop(0)

    def close(self):
        self.closed = True


def test_recorder_keeps_what_the_receiver_got(tmp_path):
    a, b = np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)
    inbox = _Inbox([{"x": a, "kind": 1}, {"y": a, "kind": 1}, {"x": b, "kind": 2}, {"x": b, "kind": 1}])
    rec = ReceivedTensorRecorder(inbox, names=("x",), when=lambda m: m["kind"] == 1)
    got = [rec.recv() for _ in range(4)]
    assert got[0]["x"] is a                                # messages pass through unchanged
    assert len(rec) == 2
    np.testing.assert_array_equal(rec.arrays()["x"], np.stack([a, b]))
    rec.close()
    assert inbox.closed                                    # everything else is delegated
    path = rec.save(str(tmp_path / "r.npz"))
    np.testing.assert_array_equal(np.load(path)["x"], np.stack([a, b]))
    with pytest.raises(ValueError, match="no message with x"):
        ReceivedTensorRecorder(_Inbox([]), names=("x",)).arrays()


def test_centering_groups_vectors_with_context_noise():
    """Later split points add a context-dependent term: the per-position-mean model still groups."""
    acts, positions, tokens = _sum_of_tables(steps=20, drift=0.0)
    noisy = acts + np.random.default_rng(2).normal(0, 0.004, acts.shape)   # ~0.1 of the token distance
    centred = link_activations(noisy, positions, radius=0.1, position_model="center")
    assert adjusted_rand_index(tokens, centred) > 0.8
    with pytest.raises(ValueError, match="position_model must be one of"):
        link_activations(noisy, positions, radius=0.1, position_model="nope")
