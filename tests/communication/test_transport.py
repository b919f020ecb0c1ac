"""Chunk framing and delivery rules (units), and a raw gRPC client against a real TLS server."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mindspore_federated._proto.vfl_pb2 import MessageChunk, SendAck
from mindspore_federated.communication._delivery import Abandoned, GapError, Inbox, StaleEpochError, next_epoch
from mindspore_federated.communication.transport import METHOD, _split, decode_chunk
from tests.communication.conftest import PASSWORD, free_port, make_message, ssl_kwargs


# --- units ---------------------------------------------------------------------------------------

def test_chunk_framing_roundtrip_matches_protobuf():
    chunk = MessageChunk(sender="leader", seq=7, total_size=10, offset=3, data=b"abcdefg", sender_epoch=99)
    header, data = decode_chunk(chunk.SerializeToString())
    assert (header.sender, header.seq, header.total_size, header.offset, header.sender_epoch) == \
        ("leader", 7, 10, 3, 99)
    assert bytes(data) == b"abcdefg" and header.data == b""


@pytest.mark.parametrize("raw", [b"\xff", b"\x0a\x10abc", b"\x2a\x05ab", b"\x0f", b"\x12\x80"])
def test_malformed_chunks_raise_value_error(raw):
    with pytest.raises(ValueError):
        decode_chunk(raw)


def test_split_groups_views_into_chunks():
    segments = [memoryview(b"abc"), memoryview(b""), memoryview(b"defghij")]
    chunks = [b"".join(bytes(p) for p in pieces) for pieces in _split(segments, 4)]
    assert chunks == [b"abcd", b"efgh", b"ij"]
    assert [b"".join(p) for p in _split([memoryview(b"abcd")], 4)] == [b"abcd"]
    assert list(_split([], 4)) == [[]]  # an empty message is still one (empty) chunk


def test_inbox_delivers_each_seq_once_in_order_and_rebases_on_new_epoch():
    inbox = Inbox("follower", maxsize=8)
    active = lambda: True  # noqa: E731
    assert inbox.classify(1, 5) == "deliver"  # fresh receiver: any seq is the baseline
    assert inbox.deliver(1, 5, "m5", active)
    assert not inbox.deliver(1, 5, "m5 again", active)  # retry of a delivered message
    assert inbox.classify(1, 4) == "duplicate"
    assert inbox.classify(1, 7) == "gap"
    with pytest.raises(GapError):
        inbox.deliver(1, 7, "m7", active)
    assert inbox.deliver(1, 6, "m6", active)
    assert inbox.deliver(2, 1, "restarted sender", active)  # new epoch: new baseline
    assert inbox.classify(1, 7) == "stale"                  # an older epoch never comes back
    with pytest.raises(StaleEpochError, match="epoch 1, older than its current epoch 2") as info:
        inbox.deliver(1, 7, "replayed", active)
    assert info.value.current == 2
    assert [inbox.get(0.1) for _ in range(3)] == ["m5", "m6", "restarted sender"]
    first = next_epoch()
    assert first < next_epoch() < next_epoch(at_least=first + 1000) and next_epoch() > first + 1000


def test_inbox_full_blocks_until_space_or_sender_gone():
    inbox = Inbox("follower", maxsize=1)
    assert inbox.deliver(1, 1, "a", lambda: True)
    gone = threading.Event()
    threading.Timer(0.3, gone.set).start()
    start = time.monotonic()
    with pytest.raises(Abandoned):
        inbox.deliver(1, 2, "b", lambda: not gone.is_set())
    assert time.monotonic() - start >= 0.25
    threading.Timer(0.3, lambda: inbox.get(1)).start()
    assert inbox.deliver(1, 2, "b", lambda: True)  # space freed: delivered (never dropped)
    assert inbox.get(1) == "b"


# --- raw gRPC client against a TLS server in another process -------------------------------------

def _credentials(pki, client="follower_client.p12"):
    import grpc
    from mindspore_federated.communication.tls import load_key_and_chain
    from cryptography.hazmat.primitives import serialization

    key, chain = load_key_and_chain(str(Path(pki.dir) / client), PASSWORD, "client")
    ca = (Path(pki.dir) / "ca.pem").read_bytes()
    return grpc.ssl_channel_credentials(ca, key, b"".join(c.public_bytes(serialization.Encoding.PEM)
                                                          for c in chain))


def _chunk(seq, total, offset, data, sender="follower", epoch=42):
    return MessageChunk(sender=sender, seq=seq, total_size=total, offset=offset, data=data,
                        sender_epoch=epoch).SerializeToString()


@pytest.mark.timeout(120)
def test_raw_client_bad_streams_are_refused_and_server_keeps_serving(pki, parties):
    import grpc
    from mindspore_federated.communication import codec

    port, fp = free_port(), free_port()
    leader = parties({"name": "leader", "port": port, "peers": {"follower": fp}, "opts": {"max_message_size": 1 << 20},
                      "ssl": ssl_kwargs(pki, "leader"),
                      "plan": [("recv", "follower", 1, 60), ("recv", "follower", 1, 60), ("recv", "follower", 1, 2)]})
    leader.expect("ready")
    target = f"127.0.0.1:{port}"

    def call(chunks, client="follower_client.p12", timeout=10):
        with grpc.secure_channel(target, _credentials(pki, client)) as channel:
            stub = channel.stream_unary(METHOD, response_deserializer=SendAck.FromString)
            return stub(iter(chunks), timeout=timeout)

    good = codec.dumps(make_message(6, 0))
    cases = [  # (chunks, client cert, expected code, text in details)
        ([b"\xff\xff\xff"], None, grpc.StatusCode.INVALID_ARGUMENT, "malformed first chunk"),
        ([], None, grpc.StatusCode.INVALID_ARGUMENT, "empty message stream"),
        ([_chunk(1, 10, 0, b"x", sender="eve")], None, grpc.StatusCode.PERMISSION_DENIED, "unknown sender 'eve'"),
        ([_chunk(1, 10, 0, b"x")], "mallory_client.p12", grpc.StatusCode.PERMISSION_DENIED,
         "include none of the configured peers ['follower']"),  # refused before any chunk is read
        ([_chunk(1, 1 << 40, 0, b"x")], None, grpc.StatusCode.RESOURCE_EXHAUSTED, "max_message_size"),
        ([_chunk(1, 100, 0, b"x" * 50)], None, grpc.StatusCode.INVALID_ARGUMENT, "ended early: 50 of 100"),
        ([_chunk(1, 100, 0, b"x" * 50), _chunk(1, 100, 60, b"x" * 40)], None, grpc.StatusCode.INVALID_ARGUMENT,
         "does not continue"),
        ([_chunk(1, 100, 0, b"x" * 50), _chunk(2, 100, 50, b"x" * 50)], None, grpc.StatusCode.INVALID_ARGUMENT,
         "does not continue"),
        ([_chunk(1, 10, 0, b"x" * 20)], None, grpc.StatusCode.INVALID_ARGUMENT, "bad first chunk"),
        ([_chunk(0, 3, 0, b"abc")], None, grpc.StatusCode.INVALID_ARGUMENT, "bad first chunk"),
        ([_chunk(1, 5, 0, b"\xff\xff\xff\xff\xff")], None, grpc.StatusCode.INVALID_ARGUMENT, "does not decode"),
        ([_chunk(1, 3, 0, b"\x0a\x05a")], None, grpc.StatusCode.INVALID_ARGUMENT, "does not decode"),
    ]
    for chunks, client, code, text in cases:
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            call(chunks, client or "follower_client.p12")
        assert info.value.code() == code and text in info.value.details(), (text, info.value)
        assert time.monotonic() - start < 5

    # a good message, split in two chunks; then a retry of it, then a gap
    half = len(good) // 2
    two = [_chunk(1, len(good), 0, good[:half]), _chunk(1, len(good), half, good[half:])]
    ack = call(two)
    assert (ack.seq, ack.duplicate) == (1, False)
    assert call(two).duplicate
    with pytest.raises(grpc.RpcError) as info:
        call([_chunk(5, len(good), 0, good)])
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # a client without certificate never gets through the handshake
    with grpc.secure_channel(target, grpc.ssl_channel_credentials((Path(pki.dir) / "ca.pem").read_bytes())) as ch:
        with pytest.raises(grpc.RpcError) as info:
            ch.stream_unary(METHOD)(iter([_chunk(2, 1, 0, b"x")]), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # the server is alive and delivered exactly the good message, once
    assert leader.expect("recv")[1:] == (6, 0, True)
    good2 = codec.dumps(make_message(6, 1))
    assert not call([_chunk(2, len(good2), 0, good2)]).duplicate
    assert leader.expect("recv")[1:] == (6, 1, True)
    assert leader.expect("recv_timeout")


# --- attacks by holders of a certificate of the CA ----------------------------------------------

def _stalled_calls(target, creds, n):
    """``n`` calls that open and then send nothing; returns (futures, release)."""
    import grpc

    release = threading.Event()

    def nothing():
        release.wait(60)
        return
        yield  # noqa: unreachable - makes this a generator

    channel = grpc.secure_channel(target, creds)
    stub = channel.stream_unary(METHOD, response_deserializer=SendAck.FromString)
    calls = [stub.future(nothing(), timeout=60) for _ in range(n)]

    def stop():
        release.set()
        channel.close()
    return calls, stop


@pytest.mark.timeout(120)
def test_stalled_streams_of_third_party_and_revoked_certificates_do_not_starve_the_peer(pki, parties):
    """Before: 12 stalled calls (any certificate of the CA, even revoked) took every worker."""
    import grpc
    from mindspore_federated.communication import codec

    port, fp = free_port(), free_port()
    leader = parties({"name": "leader", "port": port, "peers": {"follower": fp}, "ssl": ssl_kwargs(pki, "leader"),
                      "plan": [("recv", "follower", 3, 60)]})
    leader.expect("ready")
    target = f"127.0.0.1:{port}"
    stalled, stops = [], []
    for cert in ("mallory_client.p12", "follower_revoked_client.pem"):
        calls, stop = _stalled_calls(target, _credentials(pki, cert), 16)
        stalled += calls
        stops.append(stop)
    try:
        time.sleep(1.0)  # let them all open
        with grpc.secure_channel(target, _credentials(pki)) as channel:
            stub = channel.stream_unary(METHOD, response_deserializer=SendAck.FromString)
            for seq in (1, 2, 3):
                good = codec.dumps(make_message(8, seq - 1))
                start = time.monotonic()
                ack = stub(iter([_chunk(seq, len(good), 0, good)]), timeout=20)
                assert (ack.seq, ack.duplicate) == (seq, False)
                assert time.monotonic() - start < 5
        for seq in (1, 2, 3):
            assert leader.expect("recv", timeout=30)[1:] == (8, seq - 1, True)
        # every stalled call was turned away when it opened, before sending anything
        deadline = time.monotonic() + 10
        while not all(c.done() for c in stalled) and time.monotonic() < deadline:
            time.sleep(0.1)
        errors = [c.exception() if c.done() else None for c in stalled]
        assert all(e is not None for e in errors), "a stalled call is still open"
        # turned away by identity, or (when many open at once) by gRPC's concurrency cap, never admitted
        codes = {e.code() for e in errors}
        assert codes <= {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        details = " ".join(e.details() for e in errors)
        assert "include none of the configured peers ['follower']" in details and "revoked by CRL" in details
    finally:
        for stop in stops:
            stop()


def _bomb(count: int, name: str = "bomb") -> bytes:
    """A message whose one 1-bit min_max tensor of ``count`` float64 decodes to 8 x count bytes."""
    from mindspore_federated._proto.vfl_pb2 import TensorListProto, TensorProto

    tensor = TensorProto(name=name, ref_key=name, dims=[count], data_type="float64", raw_data=bytes(count // 8),
                         compress_type="min_max", bit_num=1, min_val=0.0, max_val=1.0, size=count)
    return TensorListProto(tensors=[tensor], key_order=[name], length=1).SerializeToString()


@pytest.mark.timeout(120)
def test_decompression_bomb_and_tensor_flood_are_refused_before_allocation(pki, parties):
    """Before: a 16 MiB message decoding to 1 GiB of float64 was decoded (+2 GiB peak, or MemoryError
    as UNKNOWN), and 100 000 tiny tensors were accepted (+327 MiB)."""
    import grpc
    from mindspore_federated.communication import codec

    port, fp = free_port(), free_port()
    leader = parties({"name": "leader", "port": port, "peers": {"follower": fp}, "ssl": ssl_kwargs(pki, "leader"),
                      "opts": {"max_message_size": 32 << 20},
                      "plan": [("rss_base",), ("recv", "follower", 1, 60), ("rss",)]})
    leader.expect("ready")

    def call(data, seq):
        chunks = [_chunk(seq, len(data), off, data[off:off + (1 << 20)]) for off in range(0, len(data), 1 << 20)]
        with grpc.secure_channel(f"127.0.0.1:{port}", _credentials(pki)) as channel:
            return channel.stream_unary(METHOD, response_deserializer=SendAck.FromString)(iter(chunks), timeout=60)

    flood = codec.dumps({f"t{i}": np.zeros(1, np.float32) for i in range(100_000)})
    cases = [(_bomb(1 << 27), "would decode to more than 33554432 bytes"),   # 16 MiB -> 1 GiB
             (flood, "more than 10000 tensors and dicts")]
    for seq, (data, text) in enumerate(cases, start=1):
        assert len(data) < 32 << 20
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            call(data, seq)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value
        assert text in info.value.details(), info.value.details()
        assert time.monotonic() - start < 10
    good = codec.dumps(make_message(4, 0))
    assert not call(good, 3).duplicate  # still serving (the refused ones consumed no sequence number)
    assert leader.expect("recv")[1:] == (4, 0, True)
    growth = leader.expect("rss")[1]
    assert growth < 120 << 20, f"peak RSS grew by {growth / 2**20:.0f} MiB"


@pytest.mark.timeout(90)
def test_replayed_and_stale_messages_are_not_delivered_again(pki, parties):
    """A retried message (same epoch and seq) is acknowledged as a duplicate; a message of an older
    epoch arriving after a newer one is refused (before: delivered again)."""
    import grpc
    from mindspore_federated.communication import codec

    port, fp = free_port(), free_port()
    leader = parties({"name": "leader", "port": port, "peers": {"follower": fp}, "ssl": ssl_kwargs(pki, "leader"),
                      "plan": [("recv", "follower", 2, 60), ("recv", "follower", 1, 3)]})
    leader.expect("ready")
    msgs = [codec.dumps(make_message(2, i)) for i in range(3)]
    with grpc.secure_channel(f"127.0.0.1:{port}", _credentials(pki)) as channel:
        stub = channel.stream_unary(METHOD, response_deserializer=SendAck.FromString)
        send = lambda i, seq, epoch: stub(iter([_chunk(seq, len(msgs[i]), 0, msgs[i], epoch=epoch)]), timeout=10)  # noqa: E731
        assert not send(0, 1, 1000).duplicate
        assert send(0, 1, 1000).duplicate          # a retry: acknowledged, not delivered again
        assert not send(1, 1, 2000).duplicate      # a newer epoch (the sender opened a new link)
        with pytest.raises(grpc.RpcError) as info:
            send(2, 2, 1000)                       # the old link's next message, replayed late
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "stale epoch 1000" in info.value.details() and "current epoch 2000" in info.value.details()
        assert send(1, 1, 2000).duplicate
    assert [leader.expect("recv")[1:] for _ in range(2)] == [(2, 0, True), (2, 1, True)]
    assert leader.expect("recv_timeout")


def test_admission_caps_calls_and_buffered_bytes_per_peer():
    from mindspore_federated.communication.transport import STREAMS_PER_PEER, Admission

    admission = Admission()
    try:
        slots = [admission.enter("follower", None) for _ in range(STREAMS_PER_PEER)]
        assert admission.enter("follower", None) is None      # over the cap: turned away
        assert admission.enter("other", None) is not None     # another identity is not affected
        assert admission.reserve(slots[0], "follower", 100, limit=100)   # one message always fits
        assert not admission.reserve(slots[1], "follower", 1, limit=100)  # no second buffer meanwhile
        admission.leave(slots[0])
        assert admission.reserve(slots[1], "follower", 60, limit=100)
        assert admission.reserve(slots[2], "follower", 40, limit=100)
        assert admission.enter("follower", None) is not None  # a slot was freed
    finally:
        admission.close()
