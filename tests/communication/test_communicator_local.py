"""Communicator behaviour that needs no second process: API, lifecycle, back-pressure, limits.

Plaintext on 127.0.0.1 inside the test process (TLS is covered by test_communicator.py).
"""
from __future__ import annotations

import logging
import socket
import threading
import time

import numpy as np
import pytest

from mindspore_federated import ServerConfig, VerticalFederatedCommunicator
from tests.communication.conftest import digest, free_port, make_message


def _pair(a_opts=None, b_opts=None):
    a = ServerConfig("leader", f"127.0.0.1:{free_port()}")
    b = ServerConfig("follower", f"127.0.0.1:{free_port()}")
    return (VerticalFederatedCommunicator(a, b, **(a_opts or {})),
            VerticalFederatedCommunicator(b, [a], **(b_opts or {})))


@pytest.mark.timeout(30)
def test_roundtrip_plaintext_logs_warning(caplog):
    caplog.set_level(logging.WARNING)
    leader, follower = _pair()
    assert "PLAINTEXT" in caplog.text
    with leader, follower:
        for i in range(3):
            leader.send_tensors("follower", make_message(1, i))
        for i in range(3):
            got = follower.receive("leader", timeout=10)
            assert list(got) == list(make_message(1, i))
            assert digest(got) == digest(make_message(1, i))
        follower.send_tensors("leader", {})
        assert leader.receive("follower", timeout=10) == {}


@pytest.mark.timeout(30)
def test_receive_timeout_and_usage_errors():
    leader, follower = _pair()
    with pytest.raises(RuntimeError, match="launch"):
        leader.send_tensors("follower", {"x": np.ones(1)})
    with leader:
        with pytest.raises(RuntimeError, match="already launched"):
            leader.launch()
        with pytest.raises(ValueError, match="unknown peer 'nobody'"):
            leader.send_tensors("nobody", {})
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="peer 'follower'"):
            leader.receive("follower", timeout=0.3)
        assert 0.25 < time.monotonic() - start < 2
    with pytest.raises(RuntimeError, match="closed"):
        leader.send_tensors("follower", {})
    leader.close()  # idempotent
    follower.close()


@pytest.mark.timeout(30)
def test_full_queue_blocks_the_sender_and_drops_nothing():
    leader, follower = _pair(b_opts={"queue_size": 1})
    with leader, follower:
        sent = []

        def send_all():
            for i in range(4):
                leader.send_tensors("follower", make_message(2, i))
                sent.append(i)

        thread = threading.Thread(target=send_all)
        thread.start()
        time.sleep(1.0)
        assert sent == [0]  # message 0 is queued, message 1 waits for space: the sender blocks
        got = [follower.receive("leader", timeout=10) for _ in range(4)]
        thread.join(10)
        assert sent == [0, 1, 2, 3]
        assert [int(m["id"].asnumpy()[1]) for m in got] == [0, 1, 2, 3]
        with pytest.raises(TimeoutError):
            follower.receive("leader", timeout=0.2)


@pytest.mark.timeout(30)
def test_send_deadline_names_the_unreachable_peer():
    leader, _ = _pair(a_opts={"send_deadline": 1.0})
    with leader:
        start = time.monotonic()
        with pytest.raises(TimeoutError, match=r"peer 'follower' \(127\.0\.0\.1:\d+\).*last error"):
            leader.send_tensors("follower", {"x": np.ones(2)})
        assert time.monotonic() - start < 5


@pytest.mark.timeout(30)
def test_oversized_message_refused_and_next_one_delivered():
    leader, follower = _pair(b_opts={"max_message_size": 4096})
    with leader, follower:
        with pytest.raises(ConnectionRefusedError, match="RESOURCE_EXHAUSTED.*max_message_size 4096"):
            leader.send_tensors("follower", {"big": np.zeros(1 << 16, np.uint8)})
        leader.send_tensors("follower", {"small": np.arange(3)})
        got = follower.receive("leader", timeout=10)
        assert list(got) == ["small"]
        with pytest.raises(TimeoutError):
            follower.receive("leader", timeout=0.2)


@pytest.mark.timeout(30)
def test_several_peers_addressed_by_name():
    configs = {n: ServerConfig(n, f"127.0.0.1:{free_port()}") for n in ("a", "b", "c")}
    comms = {n: VerticalFederatedCommunicator(c, [o for m, o in configs.items() if m != n])
             for n, c in configs.items()}
    for comm in comms.values():
        comm.launch()
    try:
        comms["a"].send_tensors("b", {"to": np.array([1])})
        comms["a"].send_tensors("c", {"to": np.array([2])})
        comms["c"].send_tensors("a", {"from": np.array([3])})
        comms["b"].send_tensors("a", {"from": np.array([4])})
        assert int(comms["b"].receive("a", 5)["to"].asnumpy()[0]) == 1
        assert int(comms["c"].receive("a", 5)["to"].asnumpy()[0]) == 2
        assert int(comms["a"].receive("b", 5)["from"].asnumpy()[0]) == 4
        assert int(comms["a"].receive("c", 5)["from"].asnumpy()[0]) == 3
    finally:
        for comm in comms.values():
            comm.close()


@pytest.mark.timeout(30)
def test_close_unblocks_receive_frees_port_and_threads():
    before = threading.active_count()
    leader, follower = _pair()
    leader.launch()
    errors = []

    def wait():
        try:
            leader.receive("follower")
        except RuntimeError as err:
            errors.append(err)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)
    leader.close()
    thread.join(5)
    assert errors and "closed" in str(errors[0])
    with socket.socket() as sock:  # the port is free again
        sock.bind(("127.0.0.1", int(leader.http_server_config().server_address.rsplit(":", 1)[1])))
    deadline = time.monotonic() + 5
    while threading.active_count() > before + 1 and time.monotonic() < deadline:
        time.sleep(0.1)  # grpc's own polling thread may linger briefly
    assert threading.active_count() <= before + 1, threading.enumerate()


def test_port_in_use_is_an_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        comm = VerticalFederatedCommunicator(ServerConfig("leader", f"127.0.0.1:{port}"),
                                             ServerConfig("follower", f"127.0.0.1:{free_port()}"))
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            comm.launch()


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "1.2.3:x",
                                     "::1:80", "bad host:80", ""])
def test_server_config_rejects_bad_addresses(address):
    with pytest.raises(ValueError, match="server_address"):
        ServerConfig("p", address)


def test_server_config_and_constructor_validation():
    assert ServerConfig("p", "[::1]:80").server_address == "[::1]:80"
    assert ServerConfig("p", "party-b.example:8080").server_address == "party-b.example:8080"
    with pytest.raises(ValueError, match="server_name"):
        ServerConfig("", "127.0.0.1:80")
    me, peer = ServerConfig("a", "127.0.0.1:1000"), ServerConfig("b", "127.0.0.1:1001")
    with pytest.raises(ValueError, match="unique"):
        VerticalFederatedCommunicator(me, [peer, peer])
    with pytest.raises(ValueError, match="chunk_size"):
        VerticalFederatedCommunicator(me, peer, chunk_size=10)
    with pytest.raises(ValueError, match="ssl_config"):
        VerticalFederatedCommunicator(me, peer, enable_ssl=True)
    with pytest.raises(ValueError, match="send_deadline"):
        VerticalFederatedCommunicator(me, peer, send_deadline=0)


@pytest.mark.timeout(60)
def test_tls_client_against_plaintext_server_fails_fast(pki):
    from mindspore_federated import SSLConfig
    from tests.communication.conftest import ssl_kwargs

    a = ServerConfig("leader", f"127.0.0.1:{free_port()}")
    b = ServerConfig("follower", f"127.0.0.1:{free_port()}")
    with VerticalFederatedCommunicator(a, b) as plain, \
            VerticalFederatedCommunicator(b, a, True, SSLConfig(**ssl_kwargs(pki, "follower")),
                                          send_deadline=20.0) as secure:
        start = time.monotonic()
        with pytest.raises(ConnectionRefusedError, match="peer 'leader'.*does not speak TLS"):
            secure.send_tensors("leader", {"x": np.ones(1)})
        assert time.monotonic() - start < 10
        with pytest.raises(TimeoutError):
            plain.receive("follower", timeout=0.1)


# --- limits, timeouts and liveness ----------------------------------------------------------------

@pytest.mark.timeout(60)
def test_complex_tensors_round_trip_through_the_communicator():
    """Before: the receive buffer's payload offsets left complex data misaligned -> UNKNOWN."""
    leader, follower = _pair()
    rng = np.random.default_rng(3)
    with leader, follower:
        for pad in range(8):  # key lengths move the payload's offset through every alignment
            message = {"k" * (pad + 1): (rng.standard_normal(5) + 1j * rng.standard_normal(5)).astype(np.complex64),
                       "c128" + "x" * pad: rng.standard_normal((2, 3)) * (1 + 2j)}
            leader.send_tensors("follower", message)
            assert digest(follower.receive("leader", timeout=10)) == digest(message)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("error, code", [(RuntimeError("Unsupported data type!"), "INVALID_ARGUMENT"),
                                         (MemoryError(), "RESOURCE_EXHAUSTED")])
def test_any_decode_failure_is_a_precise_status_never_unknown(monkeypatch, error, code):
    from mindspore_federated.communication import codec

    real = codec.loads

    def failing(data, *args, **kwargs):
        if len(data) > 1000:
            raise error
        return real(data, *args, **kwargs)

    monkeypatch.setattr(codec, "loads", failing)
    leader, follower = _pair()
    with leader, follower:
        with pytest.raises(ConnectionRefusedError, match=f"{code}.*message 1 from 'leader'"):
            leader.send_tensors("follower", {"big": np.zeros(1000, np.uint8)})
        leader.send_tensors("follower", {"small": np.arange(3)})  # still serving
        assert list(follower.receive("leader", timeout=10)) == ["small"]


@pytest.mark.timeout(60)
def test_stalled_calls_are_capped_per_peer_and_cancelled_when_silent(monkeypatch):
    import grpc
    from mindspore_federated._proto.vfl_pb2 import SendAck
    from mindspore_federated.communication import transport

    monkeypatch.setattr(transport, "FIRST_DATA_TIMEOUT", 1.0)
    a = ServerConfig("leader", f"127.0.0.1:{free_port()}")
    b = ServerConfig("follower", f"127.0.0.1:{free_port()}")
    release = threading.Event()

    def nothing():
        release.wait(30)
        return
        yield  # noqa: unreachable

    with VerticalFederatedCommunicator(b, a) as follower, grpc.insecure_channel(b.server_address) as channel:
        stub = channel.stream_unary(transport.METHOD, response_deserializer=SendAck.FromString)
        start = time.monotonic()
        calls = [stub.future(nothing(), timeout=30) for _ in range(transport.STREAMS_PER_PEER + 3)]
        for call in calls:
            call.exception(timeout=10)
        codes = [call.exception().code() for call in calls]
        # over the cap: turned away at once; admitted ones: cancelled after 1 s of silence
        assert codes.count(grpc.StatusCode.UNAVAILABLE) == 3, codes
        assert codes.count(grpc.StatusCode.CANCELLED) == transport.STREAMS_PER_PEER, codes
        assert 0.9 < time.monotonic() - start < 5
        release.set()
        with VerticalFederatedCommunicator(a, b) as leader:  # and the server serves normally afterwards
            leader.send_tensors("follower", {"x": np.ones(2)})
            assert list(follower.receive("leader", timeout=10)) == ["x"]


@pytest.mark.timeout(30)
def test_receive_timeout_says_nothing_listens_on_the_peer_address():
    a = ServerConfig("leader", f"127.0.0.1:{free_port()}")
    b = ServerConfig("follower", f"127.0.0.1:{free_port()}")
    with VerticalFederatedCommunicator(a, b) as leader:
        time.sleep(1.5)  # a heartbeat or two found nobody
        with pytest.raises(TimeoutError, match=rf"nothing listens on {b.server_address} \(is 'follower' "
                                               rf"started\? is the port right\?\)"):
            leader.receive("follower", timeout=0.5)


@pytest.mark.timeout(30)
def test_address_answered_by_something_else_than_a_communicator_is_named():
    import grpc
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        leader = VerticalFederatedCommunicator(ServerConfig("leader", f"127.0.0.1:{free_port()}"),
                                               ServerConfig("follower", f"127.0.0.1:{port}"))
        with leader:
            start = time.monotonic()
            with pytest.raises(ConnectionError, match=rf"peer 'follower' \(127.0.0.1:{port}\) is gone: something "
                                                      rf"answers on 127.0.0.1:{port}, but not a mindspore_federated"):
                leader.receive("follower", timeout=20)
            assert time.monotonic() - start < 5
    finally:
        server.stop(0)


@pytest.mark.timeout(60)
def test_server_with_another_certificate_identity_is_named(pki):
    from mindspore_federated import SSLConfig
    from tests.communication.conftest import ssl_kwargs

    a = ServerConfig("leader", f"127.0.0.1:{free_port()}")
    b = ServerConfig("follower", f"127.0.0.1:{free_port()}")
    # the leader's server certificate is valid, but for 10.9.8.7, not the address the follower dials
    with VerticalFederatedCommunicator(a, b, True, SSLConfig(**ssl_kwargs(pki, "leader", server="leader_wrongip_server.p12"))), \
            VerticalFederatedCommunicator(b, a, True, SSLConfig(**ssl_kwargs(pki, "follower"))) as follower:
        start = time.monotonic()
        with pytest.raises(ConnectionError, match=rf"peer 'leader' \({a.server_address}\) is gone: the server on "
                                                  rf"{a.server_address} is not 'leader' as configured: TLS handshake"):
            follower.receive("leader", timeout=20)
        assert time.monotonic() - start < 5


@pytest.mark.timeout(30)
def test_peer_answering_as_another_party_is_named():
    a = ServerConfig("leader", f"127.0.0.1:{free_port()}")
    other = ServerConfig("other", f"127.0.0.1:{free_port()}")
    # the leader believes 'follower' listens where 'other' does (a wrong port in its config)
    leader = VerticalFederatedCommunicator(a, ServerConfig("follower", other.server_address))
    with leader, VerticalFederatedCommunicator(other, a):
        start = time.monotonic()
        with pytest.raises(ConnectionError, match=rf"peer 'follower' \({other.server_address}\) is gone: "
                                                  rf"{other.server_address} answers as 'other', not as 'follower'"):
            leader.receive("follower", timeout=20)
        assert time.monotonic() - start < 5


@pytest.mark.timeout(30)
def test_goodbye_reason_reaches_the_blocked_receiver_after_queued_messages():
    leader, follower = _pair()
    with leader, follower:
        leader.send_tensors("follower", {"last": np.ones(1)})
        assert leader.goodbye("step 7: disk full") == {"follower": ""}
        assert list(follower.receive("leader", timeout=5)) == ["last"]  # queued messages first
        start = time.monotonic()
        with pytest.raises(ConnectionError, match=r"peer 'leader' \(127\.0\.0\.1:\d+\) is gone: "
                                                  r"it stopped and said why: step 7: disk full"):
            follower.receive("leader", timeout=20)
        assert time.monotonic() - start < 1
        leader.close()  # after its goodbye: no second farewell, and sends to it fail at once
        start = time.monotonic()
        with pytest.raises(ConnectionError, match="peer 'leader'.*disk full"):
            follower.send_tensors("leader", {"x": np.ones(1)})
        assert time.monotonic() - start < 2
