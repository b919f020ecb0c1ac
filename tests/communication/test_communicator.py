"""Two or more communicators in separate processes on 127.0.0.1 (mutual TLS unless noted)."""
from __future__ import annotations

import time

import pytest

from tests.communication.conftest import free_port, make_message, ssl_kwargs


def _spec(name, port, peers, pki=None, plan=(), opts=None, **ssl_overrides):
    return {"name": name, "port": port, "peers": peers, "plan": list(plan), "opts": opts or {},
            "ssl": ssl_kwargs(pki, name, **ssl_overrides) if pki is not None else None}


@pytest.mark.timeout(120)
def test_exchange_both_directions_bit_exact_in_order(pki, parties):
    n = 6
    lp, fp = free_port(), free_port()
    leader = parties(_spec("leader", lp, {"follower": fp}, pki, [("exchange", "follower", 1, 2, n)]))
    follower = parties(_spec("follower", fp, {"leader": lp}, pki, [("exchange", "leader", 2, 1, n)]))
    for party, peer_seed in ((leader, 2), (follower, 1)):
        got = [party.expect("recv") for _ in range(n)]
        assert [(seed, idx) for _, seed, idx, _ in got] == [(peer_seed, i) for i in range(n)]
        assert all(ok for *_, ok in got), got
        party.expect("done")
        sent = [item for item in party.seen if item[0] in ("sent", "send_error")]
        assert [s[0] for s in sent] == ["sent"] * n, sent


@pytest.mark.timeout(150)
def test_refused_peers_get_clear_errors_and_server_keeps_serving(pki, parties):
    lp, fp = free_port(), free_port()
    rogue = {"ca": "rogue/ca.pem", "client": "rogue/follower_client.pem", "server": "rogue/follower_server.p12",
             "crl": "rogue_crl.pem"}
    bad = [  # (name, ssl overrides or None for plaintext, expected error text)
        ("follower", {"client": "rogue/follower_client.p12"}, "refused our client certificate"),
        ("follower", {"client": "follower_expired_client.pem"}, "refused our client certificate"),
        ("follower", {"client": "follower_revoked_client.pem"}, "revoked"),
        ("follower", {"client": "mallory_client.pem"}, "include none of the configured peers ['follower']"),
        ("mallory", {}, "include none of the configured peers ['follower']"),
        ("follower", rogue, "not trusted"),  # the leader's server certificate is not trusted
        ("follower", None, "not acknowledged"),  # plaintext client against a TLS server
    ]
    leader = parties(_spec("leader", lp, {"follower": fp}, pki,
                           [("recv", "follower", 1, 90), ("recv", "follower", 1, 3)]))
    leader.expect("ready")
    steps = [("as", name, free_port(), None if over is None else ssl_kwargs(pki, name, **over),
              {"send_deadline": 4.0, "connect_timeout": 2.0}, "leader", i)
             for i, (name, over, _) in enumerate(bad)]
    steps.append(("send", "leader", 7, 0, 0))
    follower = parties(_spec("follower", fp, {"leader": lp}, pki, steps))
    for i, (name, over, text) in enumerate(bad):
        _, who, idx, outcome, message, seconds = follower.expect("as_result", timeout=60)
        assert idx == i and outcome != "ok", (name, over, outcome)
        assert text in message, (name, over, outcome, message)
        assert "leader" in message  # the error names the peer
        if over is not None:
            assert outcome == "ConnectionRefusedError" and seconds < 4.0, (name, over, seconds, message)
    follower.expect("sent")
    # the server only ever delivered the good message, and is still serving
    assert leader.expect("recv")[1:] == (7, 0, True)
    # and nothing more: the follower's communicator closes after its plan and says so
    assert "'follower' closed its communicator" in leader.expect("recv_gone", timeout=30)[1]


@pytest.mark.timeout(90)
def test_client_refuses_revoked_or_misnamed_server(pki, parties):
    lp, lp2, fp = free_port(), free_port(), free_port()
    revoked = parties(_spec("leader", lp, {"follower": fp}, pki, [("hold", 60)],
                            server="leader_revoked_server.p12"))
    wrong_ip = parties(_spec("leader", lp2, {"follower": fp}, pki, [("hold", 60)],
                             server="leader_wrongip_server.p12"))
    revoked.expect("ready")
    wrong_ip.expect("ready")
    opts = {"send_deadline": 5.0}
    follower = parties(_spec("follower", fp, {"leader": lp}, pki, [
        ("as", "follower", free_port(), ssl_kwargs(pki, "follower"), opts, "leader", 0)]))
    outcome = follower.expect("as_result")
    assert outcome[3] == "ConnectionRefusedError" and "revoked by CRL" in outcome[4], outcome
    follower2 = parties(_spec("follower", fp, {"leader": lp2}, pki, [
        ("as", "follower", free_port(), ssl_kwargs(pki, "follower"), opts, "leader", 0)]))
    outcome = follower2.expect("as_result")
    assert outcome[3] == "ConnectionRefusedError", outcome
    assert "not valid for '127.0.0.1'" in outcome[4] or "Hostname Verification" in outcome[4], outcome


@pytest.mark.timeout(120)
def test_peer_started_5s_after_sender(pki, parties):
    lp, fp = free_port(), free_port()
    follower = parties(_spec("follower", fp, {"leader": lp}, pki, [("send", "leader", 3, 0, 0)],
                             opts={"send_deadline": 90.0}))
    follower.expect("sending")
    time.sleep(5)
    started = time.monotonic()
    leader = parties(_spec("leader", lp, {"follower": fp}, pki, [("recv", "follower", 1, 60)]))
    leader.expect("ready")
    up = time.monotonic() - started
    _, idx, seconds = follower.expect("sent")
    assert seconds >= 5
    assert leader.expect("recv")[1:] == (3, 0, True)
    # once the peer is up the retry loop notices within about a second
    assert seconds <= 5 + up + 3, (seconds, up)


@pytest.mark.timeout(150)
def test_receiver_killed_mid_message_and_restarted_gets_it_exactly_once(pki, parties):
    lp, fp = free_port(), free_port()
    big = 48 << 20
    follower = parties(_spec("follower", fp, {"leader": lp}, pki, [
        ("send", "leader", 5, 1, 0), ("send", "leader", 5, 2, big), ("send", "leader", 5, 3, 0)],
        opts={"send_deadline": 120.0}))
    # queue_size=1 and never receiving: message 1 fills the queue, message 2 stays in flight
    first = parties(_spec("leader", lp, {"follower": fp}, pki, [("hold", 120)], opts={"queue_size": 1}))
    follower.expect("sent")
    follower.expect("sending")
    time.sleep(1.0)
    first.stop()  # SIGKILL while message 2 is in flight (streaming or waiting for queue space)
    time.sleep(1.0)
    second = parties(_spec("leader", lp, {"follower": fp}, pki,
                           [("recv", "follower", 2, 60), ("recv", "follower", 1, 2)]))
    got = [second.expect("recv", timeout=90)[1:] for _ in range(2)]
    assert got == [(5, 2, True), (5, 3, True)], (got, follower.seen, follower.out.qsize())
    # and nothing more (no duplicate of message 2): the follower closes after its plan and says so
    assert "closed its communicator" in second.expect("recv_gone", timeout=30)[1]
    assert follower.expect("sent")[1] == 2 and follower.expect("sent")[1] == 3


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_one_gib_message_with_bounded_memory(pki, parties):
    size = 1 << 30
    lp, fp = free_port(), free_port()
    leader = parties(_spec("leader", lp, {"follower": fp}, pki,
                           [("rss_base",), ("recv", "follower", 1, 240), ("rss",)]))
    follower = parties(_spec("follower", fp, {"leader": lp}, pki, [("send", "leader", 9, 0, size), ("rss",)],
                             opts={"send_deadline": 240.0}))
    assert leader.expect("recv", timeout=280)[1:] == (9, 0, True)
    _, sent_idx, seconds = follower.expect("sent")
    recv_growth = leader.expect("rss_at_receive")[1]
    send_growth = follower.expect("rss")[1]
    print(f"1 GiB in {seconds:.1f} s; peak RSS growth: receiver {recv_growth / 2**20:.0f} MiB, "
          f"sender {send_growth / 2**20:.0f} MiB (incl. the message itself, 1024 MiB)")
    # Bound: one copy of the message per side plus 160 MiB. Receiver: the receive buffer, which
    # the returned tensors share (decoded in place). Sender: the tensors it built; chunks are cut
    # from their memory, no serialized copy of the whole message is made. (Measured: +30 / +11 MiB.)
    assert recv_growth < size + (160 << 20), recv_growth
    assert send_growth < size + (160 << 20), send_growth


@pytest.mark.timeout(90)
def test_peer_killed_is_reported_within_10_s_naming_it(pki, parties):
    """Before: a receive blocked on a SIGKILLed peer waited out its whole timeout."""
    from mindspore_federated import SSLConfig, ServerConfig, VerticalFederatedCommunicator

    lp, fp = free_port(), free_port()
    follower = parties(_spec("follower", fp, {"leader": lp}, pki, [("send", "leader", 1, 0, 0), ("hold", 120)]))
    me, peer = ServerConfig("leader", f"127.0.0.1:{lp}"), ServerConfig("follower", f"127.0.0.1:{fp}")
    with VerticalFederatedCommunicator(me, peer, True, SSLConfig(**ssl_kwargs(pki, "leader"))) as leader:
        assert list(leader.receive("follower", timeout=60)) == list(make_message(1, 0))
        time.sleep(1.0)  # a heartbeat or two in both directions
        killed = time.monotonic()
        follower.stop()  # SIGKILL: no goodbye
        with pytest.raises(ConnectionError) as info:
            leader.receive("follower", timeout=120)
        assert time.monotonic() - killed < 10, str(info.value)
    text = str(info.value)
    assert f"peer 'follower' (127.0.0.1:{fp}) is gone: no sign of life" in text, text
    assert f"nothing listens on 127.0.0.1:{fp}" in text and "--resume" in text, text


@pytest.mark.timeout(90)
def test_send_to_a_killed_peer_gives_up_within_10_s_when_asked(pki, parties):
    """Before: a send to a SIGKILLed peer retried for its whole send_deadline (120 s in the
    examples). With give_up_when_gone (what the training protocol uses) it fails within the
    liveness timeout; without it, it keeps retrying (a restarted receiver gets it exactly once)."""
    from mindspore_federated import SSLConfig, ServerConfig, VerticalFederatedCommunicator

    lp, fp = free_port(), free_port()
    follower = parties(_spec("follower", fp, {"leader": lp}, pki, [("send", "leader", 1, 0, 0), ("hold", 120)]))
    me, peer = ServerConfig("leader", f"127.0.0.1:{lp}"), ServerConfig("follower", f"127.0.0.1:{fp}")
    with VerticalFederatedCommunicator(me, peer, True, SSLConfig(**ssl_kwargs(pki, "leader")),
                                       send_deadline=60.0) as leader:
        leader.receive("follower", timeout=60)
        time.sleep(1.0)
        killed = time.monotonic()
        follower.stop()  # SIGKILL: no goodbye
        with pytest.raises(ConnectionError) as info:
            leader.send_tensors("follower", make_message(2, 0), give_up_when_gone=True)
        assert time.monotonic() - killed < 10, str(info.value)
    text = str(info.value)
    assert "follower" in text and "is gone: no sign of life" in text and "--resume" in text, text
