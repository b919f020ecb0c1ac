"""PeerSession / FollowerLoop: handshake checks, step tags, ABORT, malformed messages."""
from collections import deque

import numpy as np
import pytest

from mindspore_federated.protocol import (Decision, FollowerLoop, GradientStats, Kind, LocalChannel, Message,
                                          PeerAborted, PeerSession, ProtocolError, decide, make_message)
from tests.protocol.tiny_split import TinyFollower, init_weights


def _pair(step_a=0, step_b=0):
    a_end, b_end = LocalChannel.pair()
    return (PeerSession(a_end, "leader", "follower", lambda: step_a),
            PeerSession(b_end, "follower", "leader", lambda: step_b), a_end, b_end)


def _abort_text(end) -> str:
    msg = Message(end.recv())
    assert msg.kind == Kind.ABORT
    return msg.text("text")


def test_handshake_lists_every_difference_and_aborts_the_peer():
    leader, follower, a_end, _ = _pair(step_a=20, step_b=0)
    leader.hello({"hidden": 64, "lr": 0.001, "vocab": 1000}, "min_max6", total_steps=np.asarray(30))
    with pytest.raises(ProtocolError) as err:
        follower.check_hello(follower.receive_raw(), {"hidden": 128, "lr": 0.001, "vocab": None}, "none")
    text = str(err.value)
    assert "hidden: ours 128, peer 64" in text and "vocab" not in text       # None = not compared
    assert "--compress ours none, peer min_max6" in text
    assert "starts at step 0 but the leader at step 20" in text
    assert _abort_text(a_end) == text


def test_handshake_ok_returns_the_extras():
    leader, follower, _, _ = _pair()
    leader.hello({"h": 3}, total_steps=np.asarray(30, np.int64))
    msg = follower.handshake({"h": 3})
    assert msg.integer("total_steps") == 30
    assert leader.check_hello(leader.receive_raw(), {"h": 3}).kind == Kind.HELLO


def test_wrong_role_is_named():
    a_end, b_end = LocalChannel.pair()
    one = PeerSession(a_end, "leader", "follower", lambda: 0)
    two = PeerSession(b_end, "leader", "follower", lambda: 0)
    one.hello({})
    with pytest.raises(ProtocolError, match="the peer is a leader, expected a follower"):
        two.check_hello(two.receive_raw(), {})


@pytest.mark.parametrize("raw, needle", [
    ({"x": np.zeros(2)}, "no 'meta' header"),
    ({"meta": {"kind": np.asarray(2)}}, "meta.step is missing"),
    ({"meta": {"kind": np.asarray(99), "step": np.asarray(1)}}, "meta.kind 99 is not a message kind"),
    ({"meta": {"kind": np.asarray([2, 3]), "step": np.asarray(1)}}, "meta.kind must be one integer"),
    ({"meta": {"kind": np.asarray(2.5), "step": np.asarray(1)}}, "meta.kind must be one integer"),
])
def test_malformed_message_is_a_protocol_error_sent_as_abort(raw, needle):
    leader, follower, a_end, _ = _pair()
    loop = FollowerLoop(follower, TinyFollower(init_weights()))
    a_end.send(raw)
    with pytest.raises(ProtocolError, match=needle):
        loop.serve_one()
    reason = _abort_text(a_end)
    assert needle in reason and "--resume" in reason


def test_missing_tensor_is_a_protocol_error_sent_as_abort():
    _, follower, a_end, _ = _pair()
    loop = FollowerLoop(follower, TinyFollower(init_weights()))
    a_end.send(make_message(Kind.FORWARD, 1, {"activations": np.zeros((2, 3), np.float32)}))
    with pytest.raises(ProtocolError, match="FORWARD of step 1: tensor 'act' is missing .has: activations."):
        loop.serve_one()
    assert "tensor 'act' is missing" in _abort_text(a_end)


def test_malformed_scalar_in_the_reply_is_a_protocol_error():
    leader, follower, a_end, b_end = _pair()
    b_end.send(make_message(Kind.BACKWARD_REPLY, 1, sq_norm=np.asarray("x")))
    reply = leader.expect(Kind.BACKWARD_REPLY, 1)
    with pytest.raises(ProtocolError, match="meta.sq_norm must be one number"):
        leader.agree(1, GradientStats(1.0, False), reply)


def test_out_of_step_and_restart_are_named_and_aborted():
    _, follower, a_end, _ = _pair(step_b=30)
    loop = FollowerLoop(follower, TinyFollower(init_weights()), completed_steps=30)
    a_end.send(make_message(Kind.DECISION, 12))
    with pytest.raises(ProtocolError, match=r"expected FORWARD of step 31, EVAL, DONE of step 30, got DECISION "
                                            r"of step 12 \(this follower has completed 30 steps\)"):
        loop.serve_one()
    assert "got DECISION of step 12" in _abort_text(a_end)
    _, follower, a_end, _ = _pair(step_b=30)
    loop = FollowerLoop(follower, TinyFollower(init_weights()), completed_steps=30)
    a_end.send(make_message(Kind.HELLO, 20))
    with pytest.raises(ProtocolError, match=r"leader restarted.*at step 20 while this follower is in step 31"):
        loop.serve_one()


def test_peer_abort_is_raised_with_its_reason_and_not_answered():
    leader, follower, a_end, b_end = _pair()
    follower.abort("the follower failed: disk full -- restart both with --resume")
    with pytest.raises(PeerAborted, match="the follower stopped: the follower failed: disk full"):
        leader.expect(Kind.FORWARD_REPLY, 1)
    leader.abort("ignored")                   # the peer is gone: nothing is sent back
    assert not b_end._inbox  # pylint: disable=protected-access


def test_handler_error_is_reported_to_the_peer():
    class Broken(TinyFollower):
        def forward(self, msg):
            raise MemoryError("out of memory")
    _, follower, a_end, _ = _pair()
    loop = FollowerLoop(follower, Broken(init_weights()))
    a_end.send(make_message(Kind.FORWARD, 1, {"act": np.zeros((2, 3), np.float32)}))
    with pytest.raises(MemoryError):
        loop.serve_one()
    assert _abort_text(a_end).startswith("the follower failed in FORWARD of step 1: MemoryError: out of memory")


def test_decide_sums_in_float32_and_flags_overflow():
    d = decide(GradientStats(3.0, False), GradientStats(1.0, False))
    assert d.global_norm == np.float32(2.0) and not d.overflow
    assert decide(GradientStats(1.0, False), GradientStats(1.0, True)).overflow
    assert decide(GradientStats(3e38, False), GradientStats(3e38, False)).overflow      # inf sum
    back = Decision.from_message(Message(make_message(Kind.DECISION, 1, **Decision(np.float32(2), True, True)
                                                      .as_scalars())))
    assert back == Decision(np.float32(2), True, True)


def test_sendable_gradient_zeroes_what_a_lossy_wire_cannot_carry():
    from types import SimpleNamespace
    from mindspore_federated.protocol import sendable_gradient
    g = np.array([1.0, np.inf], np.float32)
    out, overflow = sendable_gradient(g, SimpleNamespace(compress_type="min_max"))
    assert overflow and not out.any()
    out, overflow = sendable_gradient(np.array([1e5], np.float32), SimpleNamespace(compress_type="fp16"))
    assert overflow
    out, overflow = sendable_gradient(g, None)
    assert out is g and not overflow


def test_handshake_timeout_says_what_to_check():
    class Silent(LocalChannel):
        def recv(self, timeout=None):
            raise TimeoutError("no message from the leader at 127.0.0.1:1 within 1 s")
    session = PeerSession(Silent(deque(), deque(), "f"), "follower", "leader", lambda: 0)
    with pytest.raises(TimeoutError, match="no startup handshake from the leader: is it running, and is the address"):
        session.handshake({}, timeout=1)


def test_a_peer_written_abort_reason_is_bounded():
    leader, _, _, b_end = _pair()
    b_end.send({"meta": {"kind": np.asarray(int(Kind.ABORT)), "step": np.asarray(1),
                         "text": np.full(1_000_000, ord("x"), np.uint8)}})
    with pytest.raises(PeerAborted) as err:
        leader.expect(Kind.FORWARD_REPLY, 1)
    assert len(str(err.value)) < 4100


def test_abort_over_a_communicator_also_says_goodbye_at_the_transport():
    """ABORT goes as a message and, where the communicator offers it, as its transport-level goodbye."""
    from mindspore_federated.protocol import CommunicatorChannel

    class FakeComm:
        remote_server_configs = {}

        def __init__(self):
            self.sent, self.goodbyes = [], []

        def send_tensors(self, target, msg, **options):
            self.sent.append((target, msg, options))

        def goodbye(self, reason, target_server_name=None):
            self.goodbyes.append((reason, target_server_name))

    comm = FakeComm()
    session = PeerSession(CommunicatorChannel(comm, "leader", 5.0), "follower", "leader", lambda: 3)
    session.abort("disk full -- restart both with --resume")
    session.abort("again")                                      # at most once
    assert len(comm.sent) == 1 and int(comm.sent[0][1]["meta"]["kind"]) == Kind.ABORT
    assert comm.goodbyes == [("disk full -- restart both with --resume", "leader")]


def test_a_send_that_fails_because_the_peer_stopped_reports_the_peers_reason():
    """The peer sent ABORT and went away: our next send fails, and the error is the peer's reason."""
    class Gone(LocalChannel):
        def send(self, msg):
            raise ConnectionError("peer 'follower' is gone: it said goodbye")
    inbox = deque()
    session = PeerSession(Gone(inbox, deque(), "leader"), "leader", "follower", lambda: 0)
    inbox.append(make_message(Kind.ABORT, 3, text="the follower was interrupted -- restart both with --resume"))
    with pytest.raises(PeerAborted, match="the follower stopped: the follower was interrupted"):
        session.send(Kind.FORWARD, 4)
    with pytest.raises(ConnectionError, match="it said goodbye"):     # nothing queued: the error stands
        session.send(Kind.FORWARD, 4)
