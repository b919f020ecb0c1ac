"""PanGu-alpha generation (issue 11): incremental decoding, token choice, centralised predict."""
from __future__ import annotations

import os
import sys

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


# ------------------------------------------------------------------------------ split generation
def _write_checkpoints(root, config, seed=5, std=0.1, leader_layers=0):
    """Checkpoints as a training run leaves them (central + split, same weights), but with larger
    random weights than training's init, so greedy generation does not repeat one token."""
    from src.pangu_alpha import PanguAlphaBackbone
    from src.predict import save_as_training_run
    whole = PanguAlphaBackbone(config)
    init_weights(whole, seed, std, prefix="backbone.")
    save_as_training_run(whole, str(root), step=7, leader_layers=leader_layers)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    return _write_checkpoints(tmp_path_factory.mktemp("gen_run"), CFG)


PROMPTS = [[11, 250, 37, 980, 5], [400, 401, 6, 17, 17, 90, 3, 512]]  # the second resets at an EOD (6)


def _greedy(generator, prompt, n=20):
    try:
        return generate_ids(generator, prompt, GenerateOptions(max_generate_length=n, end_token=-1),
                            CFG.vocab_size, CFG.seq_length)
    finally:
        generator.close()


def _wire(message):
    from mindspore_federated.communication import codec
    return codec.loads(codec.dumps(message))


@pytest.fixture(scope="module")
def central_tokens(run_dir):
    from src.predict import central_generator
    gen, files = central_generator(CFG, str(run_dir))
    assert files[0].endswith("pangu_centralized_step_7.ckpt")
    return [_greedy(gen, p) for p in PROMPTS]


def test_split_greedy_equals_centralised_in_one_process(run_dir, central_tokens):
    from src.predict import split_local_generator
    for use_past in (True, False):
        gen, service, files = split_local_generator(CFG, str(run_dir), use_past, transport=_wire)
        assert sorted(os.path.basename(f) for f in files) == [
            "backbone_loss_net_step_7.ckpt", "embedding_loss_net_step_7.ckpt", "head_loss_net_step_7.ckpt"]
        assert [_greedy(gen, p) for p in PROMPTS] == central_tokens
        assert len(service.sessions) == 0
    assert len(set(central_tokens[0])) > 3  # a real continuation, not one token repeated


def test_split_greedy_with_the_split_point_moved_equals_centralised(tmp_path, central_tokens):
    """--leader_layers 1: A runs block 0 itself (from its embedding checkpoint) before B's blocks."""
    from src.predict import split_local_generator
    root = _write_checkpoints(tmp_path, CFG, leader_layers=1)
    b_names = set(ms.load_checkpoint(str(root / "checkpoints" / "follower" / "backbone_loss_net_step_7.ckpt")))
    assert b_names and not any(n.startswith("backbone.blocks.0.") for n in b_names)
    for use_past in (True, False):
        gen, service, _ = split_local_generator(CFG.replace(leader_layers=1), str(root), use_past, transport=_wire)
        assert service.backend.decoder.layers == CFG.num_blocks - 1
        assert [_greedy(gen, p) for p in PROMPTS] == central_tokens
        assert len(service.sessions) == 0
    # a party B started without the split point holds the wrong blocks: its checkpoint says so
    from src.predict import follower_decoder
    with pytest.raises(ValueError, match=r"backbone\.blocks\.0\.\S+ is missing"):
        follower_decoder(CFG, str(root))


def test_two_sessions_on_one_server_are_isolated(run_dir, central_tokens):
    """Two generations interleaved token by token on one party B give each one's text alone."""
    from src.predict import split_local_generator
    gen_a, service, _ = split_local_generator(CFG, str(run_dir))
    gen_b = gen_a.sibling()
    ids = [list(PROMPTS[0]), list(PROMPTS[1])]
    logits = [gen_a.start(ids[0]), gen_b.start(ids[1])]
    assert len(service.sessions) == 2
    for _ in range(20):
        for i, gen in enumerate((gen_a, gen_b)):
            token = int(np.argmax(logits[i]))
            ids[i].append(token)
            logits[i] = gen.extend(ids[i], token)
    assert [ids[0][len(PROMPTS[0]):], ids[1][len(PROMPTS[1]):]] == central_tokens
    gen_a.close()
    gen_b.close()
    assert len(service.sessions) == 0


def test_sessions_are_bounded_freed_and_expire(run_dir):
    import gc
    import weakref
    from mindspore_federated.inference import BadRequest, InferenceClient, InferenceService, ServerFull
    from src.predict import follower_decoder
    from src.split_generate import PanguBlocksBackend, RemoteBlocks
    now = [0.0]
    decoder, _ = follower_decoder(CFG, str(run_dir))
    service = InferenceService(PanguBlocksBackend(decoder), max_sessions=2, idle_timeout=60, clock=lambda: now[0])
    client = InferenceClient.in_process(service, "leader")
    h = CFG.hidden_size
    prompt_mask = np.tril(np.ones((1, 4, 4), np.float32))
    with pytest.raises(BadRequest, match="model settings differ between the parties: hidden_size: ours 64, peer 128"):
        RemoteBlocks(client, CFG.replace(hidden_size=128, num_heads=4))
    first, second = RemoteBlocks(client, CFG), RemoteBlocks(client, CFG)
    for blocks in (first, second):
        blocks.run(np.ones((1, 4, h), np.float32), prompt_mask, 0)
    per_session = 2 * (CFG.num_layers - 1) * CFG.seq_length * h * 4
    assert service.sessions.stats() == {"sessions": 2, "max_sessions": 2, "bytes": 2 * per_session}
    with pytest.raises(ServerFull, match="all 2 sessions are in use"):
        RemoteBlocks(client, CFG)
    state = service.sessions.get(("leader", first.session.session))
    cache = weakref.ref(state.k[0])
    first.close()
    gc.collect()
    assert cache() is None and service.sessions.stats()["bytes"] == per_session
    now[0] = 61.0  # the second session idles past the timeout: expired, its slot free again
    third = RemoteBlocks(client, CFG)
    assert len(service.sessions) == 1
    with pytest.raises(Exception, match="expired after 60 s idle"):
        second.run(np.ones((1, 1, h), np.float32), np.ones((1, 1, 5), np.float32), 4)
    # over-long sequences are refused by party B before any work, with the numbers
    with pytest.raises(BadRequest, match="positions 0..32 are beyond the trained seq_length 32"):
        third.run(np.ones((1, 33, h), np.float32), np.ones((1, 33, 33), np.float32), 0)
    third.close()
    assert service.sessions.stats()["sessions"] == 0 and service.sessions.nbytes() == 0


def test_overlong_prompt_is_refused_at_party_a(run_dir):
    from src.predict import split_local_generator
    gen, _, _ = split_local_generator(CFG, str(run_dir))
    with pytest.raises(SequenceTooLong, match="at most 31 prompt tokens"):
        _greedy(gen, list(range(10, 10 + CFG.seq_length)))


def test_checkpoints_of_another_config_are_a_clear_error(run_dir, tmp_path):
    from src.predict import LeaderModel, central_generator, follower_decoder
    wider = CFG.replace(hidden_size=128)
    with pytest.raises(ValueError, match=r"does not fit the model built from the flags .*"
                                         r"backbone.embedding.word_embedding.embedding_table is \[1000, 64\] in "
                                         r"the checkpoint, \[1000, 128\] here"):
        LeaderModel(wider, str(run_dir))
    with pytest.raises(ValueError, match=r"backbone.blocks.2.layernorm1.gamma is missing"):
        follower_decoder(CFG.replace(num_layers=4), str(run_dir))
    with pytest.raises(ValueError, match=r"position_embedding.embedding_table is \[32, 64\] in the checkpoint"):
        central_generator(CFG.replace(seq_length=64), str(run_dir))
    with pytest.raises(FileNotFoundError, match="no backbone_loss_net_step_N.ckpt in"):
        follower_decoder(CFG, str(tmp_path))


# ------------------------------------------------------------------------------ two processes, mutual TLS
PASSWORD = "generate-test-pw"


def _tls(pki, name):
    return ["--enable_ssl", "true", "--server_password", PASSWORD, "--client_password", PASSWORD,
            "--server_cert_path", str(pki / f"{name}_server.p12"), "--client_cert_path", str(pki / f"{name}_client.pem"),
            "--ca_cert_path", str(pki / "ca.pem")]


def test_two_processes_over_mutual_tls_generate_the_centralised_text(sp_model, tmp_path):
    """run_pangu_train_follower.py / _leader.py --run_type predict: the leader prints the text that
    centralised greedy generation gives with the same weights; the follower only got hidden states
    and masks, and freed every session."""
    from mindspore_federated.tools import gen_certs
    from src.predict import central_generator, generate_texts, one_line
    from src.tokenizer import JIEBATokenizer
    from tests.example.data_helpers import SENTENCES
    from tests.example.two_party import EXAMPLE_DIR, free_port, start
    pki = tmp_path / "pki"
    ca = gen_certs.generate_ca()
    gen_certs.write_ca(pki, ca, PASSWORD)
    for name in ("leader", "follower"):
        gen_certs.generate_party_certs(pki, name, ca, PASSWORD, ips=["127.0.0.1"])
    tokenizer = JIEBATokenizer(sp_model)
    config = CFG.replace(vocab_size=tokenizer.vocab_size)
    run_dir = _write_checkpoints(tmp_path / "run", config)
    prompts = [SENTENCES[0][:6], SENTENCES[5][:8]]
    model = ["--config", "tiny", "--load_ckpt_path", str(run_dir), "--run_type", "predict"]
    gen_flags = ["--max_generate_length", "12"]
    pl, pf = free_port(), free_port()
    follower = start([sys.executable, str(EXAMPLE_DIR / "run_pangu_train_follower.py"), *model, *_tls(pki, "follower"),
                      "--http_server_address", f"127.0.0.1:{pf}", "--remote_server_address", f"127.0.0.1:{pl}",
                      "--log_file", str(tmp_path / "follower.log"), "--max_sessions", "1"], tmp_path / "follower.out")
    leader = start([sys.executable, str(EXAMPLE_DIR / "run_pangu_train_leader.py"), *model, *_tls(pki, "leader"),
                    "--http_server_address", f"127.0.0.1:{pl}", "--remote_server_address", f"127.0.0.1:{pf}",
                    "--log_file", str(tmp_path / "leader.log"), "--vocab_model", sp_model, *gen_flags,
                    "--prompt", prompts[0], "--prompt", prompts[1]], tmp_path / "leader.out")
    try:
        rc_l, rc_f = leader.wait(180), follower.wait(60)
    finally:
        for proc in (leader, follower):
            if proc.poll() is None:
                proc.kill()
    out_l, out_f = (tmp_path / "leader.out").read_text(), (tmp_path / "follower.out").read_text()
    assert rc_l == 0 and rc_f == 0, (out_l[-3000:], out_f[-3000:])
    generator, _ = central_generator(config, str(run_dir))
    expected = generate_texts(generator, tokenizer, prompts, GenerateOptions(max_generate_length=12))
    got = [line.split("generated: ", 1)[1] for line in out_l.splitlines() if line.startswith("generated: ")]
    assert got == [one_line(r["text"]) for r in expected] and all(got), (got, out_l[-2000:])
    assert "mutual TLS" in out_f
    assert "0 sessions open, received tensors: attention_mask, hidden_states," in out_f, out_f[-2000:]


def test_predict_command_lines_centralised_and_one_process(sp_model, tmp_path, capsys):
    """train_centralized.py and run_pangu_train_local.py --run_type predict print the same greedy text."""
    import run_pangu_train_local
    import train_centralized
    from src.tokenizer import JIEBATokenizer
    config = CFG.replace(vocab_size=JIEBATokenizer(sp_model).vocab_size)
    run = _write_checkpoints(tmp_path / "run", config)
    flags = ["--config", "tiny", "--run_type", "predict", "--load_ckpt_path", str(run), "--vocab_model", sp_model,
             "--prompt", "今天天气很好", "--max_generate_length", "10"]
    assert train_centralized.main(flags) == 0
    central = [l for l in capsys.readouterr().out.splitlines() if l.startswith("generated: ")]
    result = run_pangu_train_local.main(flags + ["--log_file", str(tmp_path / "local.log")])
    local = [l for l in capsys.readouterr().out.splitlines() if l.startswith("generated: ")]
    assert len(central) == 1 and local == central, (central, local)
    assert result["generated"][0]["ids"] and len(result["generated"][0]["ids"]) <= 10


def test_banned_ids_are_never_chosen():
    from src.generate import GenerateOptions, choose_token
    logits = np.array([0.0, 5.0, 4.0, 1.0])
    rng = np.random.default_rng(0)
    greedy = GenerateOptions(banned_ids=(1,))
    assert choose_token(logits, np.zeros(4), greedy, rng) == 2
    sampled = GenerateOptions(top_k_num=4, banned_ids=(1, 2))
    assert {choose_token(logits, np.zeros(4), sampled, rng) for _ in range(50)} <= {0, 3}
