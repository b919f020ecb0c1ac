"""Split PanGu-alpha with compressed / privatised exchanged tensors (issue 6, PanGu part).

Default suite (in one process, every message through the codec exactly as the communicator
encodes it): the 6-bit yaml trains and moves the analytic number of bytes; EmbeddingDP makes the
follower receive 0/1 values only; a --compress mismatch between two processes fails fast.
Two processes (plaintext loopback): the compressed run gives the same losses and bytes; slow: an
EmbeddingDP run in two processes.
"""
from __future__ import annotations

import json
import math
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import mindspore as ms

from mindspore_federated.protocol import Kind, ProtocolError
from src.split_train import party_yaml, run_local
import run_pangu_train_local
from tests.example.two_party import EXAMPLE_DIR, follower_result, run_two_processes

STEPS = 25
# tiny: batch 4, seq 32, hidden 64
BATCH, SEQ, HIDDEN = 4, 32, 64
COMMON = ["--mode", "tiny", "--vocab_size", "1000", "--seed", "3", "--train_steps", str(STEPS),
          "--log_steps", "5", "--dropout_rate", "0", "--loss_scale", "1024", "--exec_mode", "pynative",
          "--eval_steps", "2", "--save_ckpt_steps", "0", "--run_config", "none"]
# per direction: protobuf field tags, names, dims, min/max, the step numbers and agreement scalars
HEADER_BUDGET = 1000


def _packed(count: int, bits: int) -> int:
    return math.ceil(count * bits / 8)


def _analytic(bits: int) -> dict:
    """Payload bytes of one training step: A->B activations + mask + the hidden-state gradient,
    B->A hidden states + the embedding gradient."""
    act, mask = BATCH * SEQ * HIDDEN, BATCH * SEQ * SEQ
    return {"a_to_b": 2 * _packed(act, bits) + _packed(mask, 1), "b_to_a": 2 * _packed(act, bits),
            "a_to_b_raw": 2 * 4 * act + 4 * mask, "b_to_a_raw": 2 * 4 * act}


def _local(tmp: Path, *extra: str):
    old_mode = ms.get_context("mode")
    try:
        return run_local(run_pangu_train_local.parse_args(
            COMMON + ["--synthetic", "--output_dir", str(tmp), "--log_file", str(tmp / "local.log"), *extra]))
    finally:
        ms.set_context(mode=old_mode)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    return _local(tmp_path_factory.mktemp("min_max6"), "--compress", "min_max6")


def test_compressed_yaml_declares_the_issue_settings():
    emb, head, backbone = (party_yaml(n, "min_max6") for n in ("embedding", "head", "backbone"))
    mm6 = {"compress_type": "min_max", "bit_num": 6}
    assert emb.compress_configs == {"embedding_table": mm6,
                                    "attention_mask": {"compress_type": "bit_pack", "bit_num": 1}}
    assert head.compress_configs == {"hidden_states": mm6}          # the gradient A sends back
    assert backbone.compress_configs == {"embedding_table": mm6,    # the gradient B sends back
                                         "hidden_states": mm6}
    fp16 = party_yaml("backbone", "fp16").compress_configs
    assert fp16["hidden_states"]["compress_type"] == "fp16"
    assert party_yaml("embedding", "min_max8").compress_configs["embedding_table"]["bit_num"] == 8
    assert party_yaml("embedding", "min_max8").compress_configs["attention_mask"]["bit_num"] == 1


def test_compressed_run_trains_and_moves_the_analytic_bytes(compressed):
    losses = compressed["losses"]
    assert len(losses) == STEPS and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3, losses
    want = _analytic(6)
    for a_bytes, b_bytes in compressed["wire_bytes"]:
        assert 0 <= a_bytes - want["a_to_b"] <= HEADER_BUDGET, (a_bytes, want)
        assert 0 <= b_bytes - want["b_to_a"] <= HEADER_BUDGET, (b_bytes, want)
        assert a_bytes / want["a_to_b"] < 1.07 and b_bytes / want["b_to_a"] < 1.07
        # 6 bits instead of 32 on the floats, 1 instead of 32 on the mask
        assert (a_bytes + b_bytes) / (want["a_to_b_raw"] + want["b_to_a_raw"]) < 0.2
    # message by message: FORWARD = activations + mask, BACKWARD = one gradient (exact payload + header)
    kinds = {}
    for kind, size in compressed["channel"].sent_log + compressed["follower_channel"].sent_log:
        kinds.setdefault(kind, set()).add(size)
    act = _packed(BATCH * SEQ * HIDDEN, 6)
    for kind, payload in ((Kind.FORWARD, act + _packed(BATCH * SEQ * SEQ, 1)), (Kind.BACKWARD, act),
                          (Kind.FORWARD_REPLY, act), (Kind.BACKWARD_REPLY, act)):
        (size,) = kinds[kind]
        assert 0 <= size - payload <= 400, (kind.name, size, payload)
    assert compressed["perplexity"] > 1


def test_compressed_log_reports_wire_bytes(compressed, tmp_path_factory):
    text = "\n".join(p.read_text() for p in tmp_path_factory.getbasetemp().glob("min_max6*/local.log"))
    assert "A sends attention_mask bit_pack/1, embedding_table min_max/6, hidden_states min_max/6" in text
    assert "step 25 wire bytes: A->B " in text and "wire bytes per training step (mean)" in text


class _Spy:
    """Wraps the follower's channel end: records the embedding_table values it receives."""

    def __init__(self, inner) -> None:
        self.inner, self.values, self.kinds = inner, [], []

    def recv(self, timeout=None):
        msg = self.inner.recv(timeout)
        if "embedding_table" in msg:
            self.kinds.append(int(msg["meta"]["kind"]))
            self.values.append(np.unique(msg["embedding_table"].asnumpy()))
        return msg

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_embedding_dp_follower_receives_only_bits(tmp_path, monkeypatch):
    import src.split_train as st
    spies = []
    real_init = st.FollowerParty.__init__

    def spying_init(self, config, channel, *a, **k):
        spy = _Spy(channel)
        spies.append(spy)
        real_init(self, config, spy, *a, **k)
    monkeypatch.setattr(st.FollowerParty, "__init__", spying_init)
    result = _local(tmp_path, "--embedding_dp", "--embedding_dp_eps", "2", "--compress", "min_max6")
    (spy,) = spies
    assert spy.kinds.count(Kind.FORWARD) == STEPS and Kind.EVAL in spy.kinds   # training and eval
    seen = np.unique(np.concatenate(spy.values))
    assert set(seen.tolist()) == {0.0, 1.0}
    assert all(np.isfinite(result["losses"]))
    # embedding_table travels as 1-bit bit_pack: FWD = n/8 + mask/8 bytes (+ header)
    fwd = [size for kind, size in result["channel"].sent_log if kind == Kind.FORWARD]
    payload = _packed(BATCH * SEQ * HIDDEN, 1) + _packed(BATCH * SEQ * SEQ, 1)
    assert all(0 <= size - payload <= 400 for size in fwd), (fwd[:3], payload)


def test_embedding_dp_with_min_max_on_the_same_tensor_is_refused():
    from mindspore_federated import FLModel, FLYamlData
    from src.pangu_alpha_config import get_config
    from src.split_pangu_alpha import EmbeddingLossNet, yaml_path
    raw = FLYamlData(yaml_path("embedding_compressed")).yaml_data
    bad = FLYamlData.from_dict(dict(raw, privacy={"embedding_dp": {"eps": 1.0}}))
    from mindspore_federated.privacy import EmbeddingDP
    with pytest.raises(ValueError, match="EmbeddingDP and min_max"):
        FLModel(bad, EmbeddingLossNet(get_config("tiny", vocab_size=1000)), optimizers=[],
                embedding_dp=EmbeddingDP(bad.embedding_dp_eps))


def test_in_process_compress_mismatch_is_refused():
    """The handshake check itself, both sides of the message."""
    from mindspore_federated.protocol import LocalChannel, PeerSession
    a_end, b_end = LocalChannel.pair()
    leader = PeerSession(a_end, "leader", "follower", lambda: 0)
    follower = PeerSession(b_end, "follower", "leader", lambda: 0)
    settings = {"hidden_size": 64}
    leader.hello(settings, "min_max6")
    with pytest.raises(ProtocolError, match="--compress ours none, peer min_max6"):
        follower.check_hello(follower.receive_raw(), settings, "none")


# ------------------------------------------------------------------------------ two processes
PROBE = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {example!r})
    import numpy as np
    import mindspore_federated
    import run_pangu_train_follower
    import src.split_train as st
    seen = set()
    real_recv = st.CommunicatorChannel.recv
    def recv(self, timeout=None):
        msg = real_recv(self, timeout)
        if "embedding_table" in msg:
            seen.update(np.unique(msg["embedding_table"].asnumpy())[:4].tolist())
        return msg
    st.CommunicatorChannel.recv = recv
    args = run_pangu_train_follower.parse_args(sys.argv[1:])
    try:
        res = st.run_follower(args)
    except Exception as err:
        print("FOLLOWER-ERROR", type(err).__name__, err, flush=True)
        sys.exit(1)
    print("FOLLOWER-RESULT", json.dumps({{"step": res["final_step"], "bytes": res["bytes_per_step"],
          "values": sorted(seen)[:4], "n_values": len(seen)}}), flush=True)
""")


def _two_processes(tmp: Path, leader_extra=(), follower_extra=(), timeout=240):
    """Plaintext on loopback (TLS is covered by test_split_pangu)."""
    return run_two_processes(tmp, COMMON, PROBE.format(example=str(EXAMPLE_DIR)), leader_extra,
                             follower_extra, timeout)


_follower_result = follower_result


def test_two_processes_compress_mismatch_fails_fast(tmp_path):
    t0 = time.time()
    rc_l, rc_f, out_l, out_f = _two_processes(tmp_path, leader_extra=("--compress", "min_max6"),
                                              follower_extra=("--compress", "fp16"), timeout=120)
    assert rc_l == 1 and rc_f == 1, (out_l[-2000:], out_f[-2000:])
    assert "wire compression differs between the parties: --compress ours min_max6, peer fp16" in out_l
    assert "wire compression differs between the parties: --compress ours fp16, peer min_max6" in out_f
    assert time.time() - t0 < 90


def test_two_processes_compressed_run(compressed, tmp_path):
    rc_l, rc_f, out_l, out_f = _two_processes(tmp_path, leader_extra=("--compress", "min_max6"),
                                              follower_extra=("--compress", "min_max6"))
    assert rc_l == 0 and rc_f == 0, (out_l[-3000:], out_f[-3000:])
    records = json.loads((tmp_path / "leader_loss.json").read_text())
    losses = [r["loss"] for r in records]
    # the codec is deterministic: the same losses as the one-process run through the codec
    np.testing.assert_allclose(losses, compressed["losses"], rtol=1e-5)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3
    want = _analytic(6)
    # bytes as the communicator streamed them (addresses in the header: a few bytes more than in-process)
    assert all(0 <= r["bytes_a_to_b"] - want["a_to_b"] <= HEADER_BUDGET for r in records), records[0]
    result = _follower_result(out_f)
    assert result["step"] == STEPS and len(result["bytes"]) == STEPS
    assert all(0 <= b - want["b_to_a"] <= HEADER_BUDGET for b in result["bytes"]), result["bytes"][:3]
    assert result["n_values"] > 2                       # real (quantised) activations


@pytest.mark.slow
def test_two_processes_embedding_dp(tmp_path):
    rc_l, rc_f, out_l, out_f = _two_processes(
        tmp_path, leader_extra=("--compress", "min_max6", "--embedding_dp", "--embedding_dp_eps", "2"),
        follower_extra=("--compress", "min_max6"))
    assert rc_l == 0 and rc_f == 0, (out_l[-3000:], out_f[-3000:])
    result = _follower_result(out_f)
    assert result["values"] == [0.0, 1.0] and result["n_values"] == 2


def test_compression_with_the_split_point_moved(tmp_path):
    """--leader_layers 1 --compress min_max6: A's block-0 output travels 6-bit like the embeddings did."""
    result = _local(tmp_path, "--compress", "min_max6", "--leader_layers", "1", "--train_steps", "8")
    assert len(result["losses"]) == 8 and all(np.isfinite(result["losses"]))
    assert result["losses"][-1] < result["losses"][0]
    want = _analytic(6)
    for a_bytes, b_bytes in result["wire_bytes"]:
        assert 0 <= a_bytes - want["a_to_b"] <= HEADER_BUDGET and 0 <= b_bytes - want["b_to_a"] <= HEADER_BUDGET
    assert result["follower"].received_keys == {"embedding_table", "attention_mask", "output.hidden_states"}
