"""FLModelRelay: the follower's part split into pipeline stages trains exactly like the whole model
(tiny numpy nets: leader + 2 or 3 follower stages in one process), and a failure anywhere stops all."""
import numpy as np
import pytest

from mindspore_federated.protocol import Kind, PeerAborted, PeerSession, ProtocolError
from tests.protocol.tiny_split import batch, follower_chain, init_weights, middle_names, reference, split_run

STEPS = 6


def _handshaken_leader(lead_end, chain, pump=lambda: None) -> PeerSession:
    """A leader session to the chain's first stage, past the handshake."""
    leader = PeerSession(lead_end, "leader", "follower", lambda: 0, pump=pump)
    leader.hello({"in": 4})
    chain["sessions"][0].handshake({"in": 4})
    leader.check_hello(leader.receive_raw(), {"in": 4})
    return leader


@pytest.mark.parametrize("stages", [2, 3])
def test_stages_equal_the_whole_model(stages):
    split, whole = split_run(STEPS, stages=stages), reference(STEPS, stages=stages)
    np.testing.assert_allclose(split["losses"], whole["losses"], rtol=1e-5)
    assert set(split["weights"]) == set(whole["weights"]) == {"W1", "W3", *middle_names(stages)}
    for name, value in whole["weights"].items():
        np.testing.assert_allclose(split["weights"][name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert [loop.completed for loop in split["loops"]] == [STEPS] * stages
    assert split["losses"][-1] < split["losses"][0]


@pytest.mark.parametrize("poison", ["weights", "unsendable"])
def test_overflow_at_the_last_stage_skips_the_step_everywhere(poison):
    """Only the last stage sees the overflow; its flag reaches the leader through the relay, and all
    three parties skip step 3 and halve the loss scale, as the whole model does."""
    split, whole = split_run(STEPS, poison_step=3, poison=poison, stages=2), reference(STEPS, overflow_at=3, stages=2)
    assert split["leader_scale"] == whole["scale"] == 512.0
    assert split["stage_scales"] == [512.0, 512.0]
    np.testing.assert_allclose(split["losses"], whole["losses"], rtol=1e-5)
    for name, value in whole["weights"].items():
        np.testing.assert_allclose(split["weights"][name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_eval_passes_through_every_stage():
    w = init_weights(stages=2)
    lead_end, chain = follower_chain(w, stages=2)
    leader = _handshaken_leader(lead_end, chain, chain["pump"])
    x, _ = batch(1)
    got = leader.exchange(Kind.EVAL, 0, {"act": x @ w["W1"]}, Kind.EVAL_REPLY).tensor("hidden")
    np.testing.assert_allclose(got, np.tanh(np.tanh(x @ w["W1"] @ w["W2"]) @ w["W2_1"]), rtol=1e-6)


def test_a_mis_split_is_refused_at_startup():
    """The stages' settings say which part each holds: the downstream stage refuses the handshake
    (and, as in every failed handshake, tells the relay why)."""
    w = init_weights(stages=2)
    with pytest.raises(ProtocolError, match=r"startup handshake failed: .*blocks: ours 2-3, peer 1-1"):
        follower_chain(w, stages=2, settings=[{"in": 4, "blocks": "1-1"}, {"in": 4, "blocks": "2-3"}])


def test_a_failing_last_stage_stops_the_leader_with_its_reason():
    """The stages behave as separate processes (their exceptions only travel as ABORT): the leader
    stops with the last stage's own words, relayed by the middle one."""
    errors = []
    with pytest.raises(PeerAborted) as info:
        split_run(STEPS, poison_step=3, poison="fail", stages=2, errors=errors)
    text = str(info.value)
    assert text.startswith("the follower stopped: the follower2 stopped: the follower2 failed in BACKWARD of "
                           "step 3: OSError: disk full"), text
    assert [type(e).__name__ for e in errors] == ["OSError", "ProtocolError"]


def test_the_leader_stopping_reaches_the_last_stage_through_the_relay():
    lead_end, chain = follower_chain(init_weights(stages=2), stages=2)
    leader = _handshaken_leader(lead_end, chain)
    leader.abort("the leader was interrupted: KeyboardInterrupt")
    with pytest.raises(PeerAborted, match="the leader stopped: the leader was interrupted"):
        chain["loops"][0].run()
    with pytest.raises(PeerAborted, match="the follower stopped: the leader stopped: the leader was interrupted"):
        chain["loops"][1].run()


def test_through_the_codec_too():
    pytest.importorskip("mindspore")
    split, whole = split_run(3, wire=True, stages=2), reference(3, stages=2)
    np.testing.assert_allclose(split["losses"], whole["losses"], rtol=1e-5)
