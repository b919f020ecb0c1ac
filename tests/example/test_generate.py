"""PanGu-alpha generation (issue 11): incremental decoding, token choice, centralised predict."""
from __future__ import annotations

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor

from src.generate import GenerateOptions, PanguGenerator, choose_token, generate_ids
from src.incremental import BlocksDecoder, BlocksSession, SequenceTooLong
from src.pangu_alpha import PanguAlphaModel, init_weights
from src.pangu_alpha_config import get_config
from src.utils import get_position_and_mask

CFG = get_config("tiny", vocab_size=1000, dropout_rate=0.0)


@pytest.fixture(autouse=True)
def _pynative():
    old = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    yield
    ms.set_context(mode=old)


@pytest.fixture(scope="module")
def model():
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    net = PanguAlphaModel(CFG)
    init_weights(net, 3, 0.2)  # larger weights than training's 0.02: logits that tell positions apart
    net.set_train(False)
    return net


def central_generator(net, use_past=True):
    decoder = BlocksDecoder(net.backbone.blocks, CFG)
    return PanguGenerator(CFG, net.backbone.embedding, net.backbone, net.head, lambda: BlocksSession(decoder),
                          use_past=use_past)


def full_logits(net, ids):
    pos, mask = get_position_and_mask(ids, CFG.eod_id)
    return net(Tensor(ids[None, :-1]), Tensor(pos[None]), Tensor(mask[None])).asnumpy()


@pytest.mark.parametrize("use_past", [True, False])
def test_incremental_logits_equal_full_recomputation(model, use_past):
    """Every position's logits, prompt then one token at a time (an EOD inside resets the document),
    against the model's own full forward (the training path)."""
    ids = np.random.RandomState(0).randint(10, CFG.vocab_size, size=CFG.seq_length + 1).astype(np.int32)
    ids[12] = CFG.eod_id
    expected = full_logits(model, ids)
    gen = central_generator(model, use_past)
    prompt = 5
    got = [gen.start(list(ids[:prompt]))]
    for t in range(prompt, CFG.seq_length):
        got.append(gen.extend(list(ids[:t + 1]), int(ids[t])))
    gen.close()
    diff = np.abs(np.stack(got) - expected[prompt - 1:])
    assert diff.max() <= 1e-5 * np.abs(expected).max(), diff.max()  # a few float32 ulps of the logits' scale


def test_blocks_session_refuses_bad_requests(model):
    session = BlocksSession(BlocksDecoder(model.backbone.blocks, CFG))
    h = CFG.hidden_size
    with pytest.raises(SequenceTooLong, match="beyond the trained seq_length 32"):
        session.run(np.zeros((1, 33, h), np.float32), np.ones((1, 33, 33), np.float32), 0)
    with pytest.raises(ValueError, match=r"must be \[1, n, 64\]"):
        session.run(np.zeros((1, 2, h + 1), np.float32), np.ones((1, 2, 2), np.float32), 0)
    with pytest.raises(ValueError, match="this session holds 0 positions"):
        session.run(np.zeros((1, 1, h), np.float32), np.ones((1, 1, 4), np.float32), 3)
    session.run(np.zeros((1, 2, h), np.float32), np.tril(np.ones((1, 2, 2), np.float32)), 0)
    with pytest.raises(ValueError, match=r"attention mask must be \[1, 1, 3\]"):
        session.run(np.zeros((1, 1, h), np.float32), np.ones((1, 1, 2), np.float32), 2)
    assert session.nbytes == 2 * (CFG.num_layers - 1) * CFG.seq_length * h * 4
    session.close()
    assert session.nbytes == 0


# ------------------------------------------------------------------------------ choosing tokens
def test_greedy_takes_the_argmax_after_penalties():
    logits = np.array([0.0, 3.0, 2.9, -1.0])
    counts = np.zeros(4)
    rng = np.random.default_rng(0)
    assert choose_token(logits, counts, GenerateOptions(), rng) == 1
    counts[1] = 1  # presence penalty 0.2 puts token 2 ahead; log-softmax shifts all scores alike
    assert choose_token(logits, counts, GenerateOptions(presence_penalty=0.2), rng) == 2
    counts[1] = 3  # frequency penalty 0.05 per occurrence: 3 * 0.05 > 0.1
    assert choose_token(logits, counts, GenerateOptions(frequency_penalty=0.05), rng) == 2
    assert choose_token(logits, counts, GenerateOptions(frequency_penalty=0.03), rng) == 1


def test_top_k_and_top_p_sample_the_right_sets_with_the_right_frequencies():
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    logits = np.log(probs) + 7.0
    counts = np.zeros(4)
    rng = np.random.default_rng(1)
    draws = np.array([choose_token(logits, counts, GenerateOptions(top_k_num=2), rng) for _ in range(4000)])
    assert set(draws) == {0, 1}
    assert abs(np.mean(draws == 0) - 0.5 / 0.8) < 0.03
    # top_p 0.7: 0.5 < 0.7 <= 0.8 -> tokens {0, 1}; top_p 0.85 -> {0, 1, 2}
    draws = np.array([choose_token(logits, counts, GenerateOptions(top_k_num=4, top_p=0.7), rng)
                      for _ in range(2000)])
    assert set(draws) == {0, 1}
    draws = np.array([choose_token(logits, counts, GenerateOptions(top_p=0.85), rng) for _ in range(4000)])
    assert set(draws) == {0, 1, 2}
    assert abs(np.mean(draws == 2) - 0.15 / 0.95) < 0.03


def test_generation_stops_at_end_token_length_and_seq_length():
    class Scripted:  # logits favour the next token of a script
        def __init__(self, script):
            self.script = script

        def _logits(self, n):
            out = np.zeros(20)
            out[self.script[n - 3]] = 5.0
            return out

        def start(self, ids):
            return self._logits(len(ids))

        def extend(self, ids, token):
            return self._logits(len(ids))

    prompt = [11, 12, 13]
    assert generate_ids(Scripted([14, 15, 9, 16]), prompt, GenerateOptions(), 20, 32) == [14, 15]
    assert generate_ids(Scripted([14] * 40), prompt, GenerateOptions(max_generate_length=4), 20, 32) == [14] * 4
    assert generate_ids(Scripted([14] * 40), prompt, GenerateOptions(max_generate_length=40), 20, 8) == [14] * 5
    with pytest.raises(SequenceTooLong, match="the prompt has 8 tokens but the model was trained with seq_length 8"):
        generate_ids(Scripted([14]), list(range(10, 18)), GenerateOptions(), 20, 8)
    with pytest.raises(ValueError, match="--top_k_num must be >= 1"):
        GenerateOptions(top_k_num=0)
