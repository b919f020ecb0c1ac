"""gRPC transport: a message streamed as chunks, retried until acknowledged, validated on receipt.

Only this module talks to grpc. Chunks are (de)serialized by hand around the payload so that the
bytes of a chunk are copied once on each side (protobuf would copy them twice more).
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent import futures
from typing import Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np

import grpc

from mindspore_federated._proto.vfl_pb2 import Heartbeat, HeartbeatAck, MessageChunk, SendAck
from mindspore_federated.communication._delivery import Abandoned, GapError, Inbox, StaleEpochError, next_epoch
from mindspore_federated.communication._wire import DecodeLimitExceeded
from mindspore_federated.communication._wire import scan_fields, varint
from mindspore_federated.communication.tls import ServerProbe, TLSMaterial

logger = logging.getLogger(__name__)

SERVICE = "mindspore.fl.VerticalFederatedTransport"
METHOD = f"/{SERVICE}/SendMessage"
BEAT_METHOD = f"/{SERVICE}/Beat"
_STALE = "stale epoch"
_CURRENT_EPOCH_KEY = "msf-current-epoch"  # trailing metadata of a stale-epoch refusal
MIN_CHUNK_SIZE = 64 << 10
MAX_CHUNK_SIZE = 16 << 20
_CHUNK_OVERHEAD = 64 << 10  # headroom over the payload for the chunk's own fields
_DATA_TAG = bytes([MessageChunk.DATA_FIELD_NUMBER << 3 | 2])

# Failures that say nothing about the message itself: the peer is down, restarting, the
# connection broke or the attempt timed out. Retrying is safe, the receiver de-duplicates.
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL})
# gRPC's own wording when *we* rejected the server during the TLS handshake: never transient.
_TLS_FAILURES = ("handshake failed", "certificate_verify_failed", "hostname verification",
                 "custom verification check failed")


def _split(segments: Sequence[memoryview], chunk_size: int) -> Iterator[list]:
    """Group byte views into lists of views totalling ``chunk_size`` (the last one may be shorter)."""
    pieces, size, yielded = [], 0, False
    for view in segments:
        pos, length = 0, len(view)
        while pos < length:
            take = min(chunk_size - size, length - pos)
            pieces.append(view[pos:pos + take])
            size += take
            pos += take
            if size == chunk_size:
                yield pieces
                pieces, size, yielded = [], 0, True
    if pieces or not yielded:
        yield pieces


def decode_chunk(raw: bytes) -> Tuple[MessageChunk, memoryview]:
    """(chunk without ``data``, view of ``data`` in ``raw``); ValueError when malformed."""
    view = memoryview(raw)
    header, spans = scan_fields(view, 0, len(view), "chunk", (MessageChunk.DATA_FIELD_NUMBER,))
    data_spans = spans[MessageChunk.DATA_FIELD_NUMBER]
    data = view[data_spans[-1][0]:data_spans[-1][1]] if data_spans else view[0:0]
    try:
        return MessageChunk.FromString(header), data
    except Exception as err:  # DecodeError / RuntimeError depending on the protobuf backend
        raise ValueError(f"malformed chunk: {err}") from err


def split_address(address: str) -> Tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


# --- sending -------------------------------------------------------------------------------------

class PeerLink:
    """The channel to one peer; sends one message at a time until the peer acknowledges it."""

    def __init__(self, own_name: str, peer_name: str, address: str, epoch: int, *,
                 material: Optional[TLSMaterial], chunk_size: int, connect_timeout: float,
                 send_deadline: float, farewell: Callable[[], Optional[str]] = lambda: None):
        self.own_name, self.peer_name, self.address = own_name, peer_name, address
        self._epoch = epoch
        self._chunk_size = chunk_size
        self._send_deadline = send_deadline
        self._farewell = farewell
        self._material = material
        self._probe = ServerProbe(material) if material is not None else None
        self._server_checked = False
        self._peer_epoch: Optional[int] = None
        self._closed = False
        options = [
            ("grpc.max_send_message_length", MAX_CHUNK_SIZE + _CHUNK_OVERHEAD),
            ("grpc.max_receive_message_length", 1 << 20),
            # one connection attempt (TCP + TLS) may take this long
            ("grpc.min_reconnect_backoff_ms", int(connect_timeout * 1000)),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            # a connection whose peer vanished without a reset breaks within ~15 s
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if material is None:
            self._channel = grpc.insecure_channel(address, options=options)
        else:
            creds = grpc.ssl_channel_credentials(material.ca_pem, material.client_key_pem,
                                                 material.client_chain_pem)
            self._channel = grpc.secure_channel(address, creds, options=options)
        self._call = self._channel.stream_unary(METHOD, request_serializer=None,
                                                response_deserializer=SendAck.FromString)
        self._beat = self._channel.stream_unary(BEAT_METHOD, request_serializer=None,
                                                response_deserializer=HeartbeatAck.FromString).future

    def _describe(self) -> str:
        return f"peer '{self.peer_name}' ({self.address})"

    def _chunks(self, seq: int, segments: Sequence, total: int) -> Iterator[bytes]:
        """Serialized chunks of the message whose bytes are the concatenation of ``segments``."""
        offset = 0
        for pieces in _split(segments, self._chunk_size):
            header = MessageChunk(sender=self.own_name, seq=seq, total_size=total, offset=offset,
                                  sender_epoch=self._epoch).SerializeToString()
            size = sum(len(p) for p in pieces)
            yield b"".join((header, _DATA_TAG, varint(size), *pieces))
            offset += size

    def _check_server(self) -> str:
        """With a CRL, fetch the server's certificate on a side connection and check it.

        Returns "" when the send may go ahead, otherwise why it must wait (retryable); raises
        ConnectionRefusedError when the server is revoked or the TLS handshake is refused.
        """
        if self._material is None or self._material.crl is None or self._server_checked:
            return ""
        host, port = split_address(self.address)
        cert, problem, refused = self._probe.probe(host, port)
        if cert is not None and self._material.crl.is_revoked(cert):
            raise ConnectionRefusedError(
                f"{self._describe()}: its server certificate {cert.subject.rfc4514_string()} (serial "
                f"{cert.serial_number:x}) is revoked by CRL {self._material.crl.path}")
        if refused:
            raise ConnectionRefusedError(f"TLS handshake with {self._describe()} refused: {problem}")
        if cert is None:
            return problem or "server certificate not verified yet"
        self._server_checked = True
        return ""

    def _diagnose(self, details: str) -> None:
        """Raise ConnectionRefusedError when a failure is a TLS refusal rather than a peer down."""
        lowered = details.lower()
        if any(marker in lowered for marker in _TLS_FAILURES):
            raise ConnectionRefusedError(f"TLS handshake with {self._describe()} failed (its certificate "
                                         f"is not trusted or does not match the address): {details}")
        if self._probe is not None and "socket closed" in lowered:
            host, port = split_address(self.address)
            _, problem, refused = self._probe.probe(host, port)
            if refused:
                raise ConnectionRefusedError(f"TLS handshake with {self._describe()} refused: {problem}")

    def send(self, seq: int, segments: Sequence, gone: Optional[Callable[[], str]] = None) -> SendAck:
        """Stream message ``seq`` (the concatenation of the bytes-like ``segments``) and wait for
        its acknowledgement; retry transient failures until the deadline, or until ``gone`` (the
        peer's liveness verdict) says why the peer is to be taken for gone."""
        segments = [memoryview(s).cast("B") for s in segments]
        total = sum(len(s) for s in segments)
        start = time.monotonic()
        deadline = start + self._send_deadline
        backoff, attempt, last_error, last_log = 0.05, 0, "", 0.0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"message {seq} to {self._describe()} not acknowledged within "
                                   f"{self._send_deadline:g} s ({attempt} attempt(s)); last error: "
                                   f"{last_error or 'none'}")
            attempt += 1
            problem = self._check_server()
            if not problem:
                try:
                    ack = self._call(self._chunks(seq, segments, total), timeout=remaining)
                except (grpc.RpcError, ValueError) as err:
                    if self._closed:
                        raise ConnectionAbortedError(f"message {seq} to {self._describe()}: the "
                                                     f"communicator was closed") from None
                    if not isinstance(err, grpc.RpcError):
                        raise
                    code, details = err.code(), err.details() or ""
                    if self._moved_past_stale_epoch(err):
                        continue
                    busy = code == grpc.StatusCode.RESOURCE_EXHAUSTED and "Concurrent RPC limit" in details
                    if code not in _RETRYABLE and not busy:
                        raise ConnectionRefusedError(f"{self._describe()} refused message {seq}: "
                                                     f"{code.name}: {details}") from None
                    self._diagnose(details)
                    problem = f"{code.name}: {details}"
                    self._server_checked = False  # the next connection may reach another server
                else:
                    self._after_ack(seq, ack, attempt, start)
                    return ack
            last_error = problem
            farewell = self._farewell()
            if farewell is not None:
                raise ConnectionError(f"message {seq} to {self._describe()} not delivered: it stopped "
                                      f"and said why: {farewell}")
            verdict = gone() if gone is not None else ""
            if verdict:
                raise ConnectionError(f"message {seq} to {self._describe()} not delivered: it is gone: "
                                      f"{verdict}")
            now = time.monotonic()
            if attempt == 1 or now - last_log >= 10:
                logger.warning("sending message %d to %s failed (attempt %d), retrying for up to %.0f s: %s",
                               seq, self._describe(), attempt, deadline - now, problem)
                last_log = now
            time.sleep(max(0.0, min(backoff, deadline - now)))
            if self._closed:
                raise ConnectionAbortedError(f"message {seq} to {self._describe()}: the communicator "
                                             f"was closed")
            backoff = min(backoff * 2, 1.0)

    def _moved_past_stale_epoch(self, err: grpc.RpcError) -> bool:
        """After a "stale epoch" refusal (our clock is behind the peer's record of us, e.g. this
        process restarted with an earlier clock), take an epoch newer than the peer's; True to retry."""
        if err.code() != grpc.StatusCode.FAILED_PRECONDITION or _STALE not in (err.details() or ""):
            return False
        current = dict(err.trailing_metadata() or ()).get(_CURRENT_EPOCH_KEY, "")
        if not current.isdigit() or int(current) < self._epoch:
            return False
        old, self._epoch = self._epoch, next_epoch(at_least=int(current) + 1)
        logger.warning("%s knows a newer epoch of ours than %d (clock moved back?); continuing with "
                       "epoch %d", self._describe(), old, self._epoch)
        return True

    # --- liveness ------------------------------------------------------------------------------

    def beat(self, epoch: int, goodbye: str = "", timeout: float = 2.0):
        """Start a heartbeat (with ``goodbye``: a farewell); returns a future of HeartbeatAck."""
        request = Heartbeat(sender=self.own_name, sender_epoch=epoch, goodbye=goodbye).SerializeToString()
        return self._beat(iter([request]), timeout=timeout)

    def beat_outcome(self, future) -> Tuple[Optional[int], str, bool]:
        """(peer's epoch or None, what is wrong or "", whether that is a lasting misconfiguration)."""
        try:
            ack = future.result()
        except grpc.RpcError as err:
            return (None,) + self.explain(err.code(), err.details() or "")
        except grpc.FutureCancelledError:  # the link was closed meanwhile (replaced after a failed send)
            return None, "heartbeat cancelled", False
        if ack.receiver != self.peer_name:
            return None, (f"{self.address} answers as '{ack.receiver}', not as '{self.peer_name}' "
                          f"(check the configured addresses)"), True
        return ack.receiver_epoch, "", False

    def explain(self, code, details: str) -> Tuple[str, bool]:
        """A failed call to the peer in words, naming the address and the likely remedy."""
        lowered = details.lower()
        if code == grpc.StatusCode.UNAVAILABLE and "connection refused" in lowered:
            return (f"nothing listens on {self.address} (is '{self.peer_name}' started? is the port "
                    f"right?)"), False
        if code == grpc.StatusCode.UNAVAILABLE and "socket closed" in lowered:
            return (f"{self.address} closed the connection during the handshake (TLS enabled on one side "
                    f"only, or it refused our certificate)"), False
        if "wrong_version_number" in lowered:
            return f"the server on {self.address} does not speak TLS (is enable_ssl off on its side?)", True
        if any(marker in lowered for marker in _TLS_FAILURES):
            return (f"the server on {self.address} is not '{self.peer_name}' as configured: TLS "
                    f"handshake failed ({details})"), True
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return (f"something answers on {self.address}, but not a mindspore_federated "
                    f"communicator ({details})"), True
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return f"'{self.peer_name}' at {self.address} refuses us: {details}", True
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"no answer from {self.address} in time", False
        return f"{self.address}: {code.name}: {details}", False

    def _after_ack(self, seq: int, ack: SendAck, attempt: int, start: float) -> None:
        if ack.seq != seq:
            raise ConnectionRefusedError(f"{self._describe()} acknowledged seq {ack.seq} for message {seq}")
        if self._peer_epoch is not None and ack.receiver_epoch != self._peer_epoch:
            logger.warning("%s restarted; messages it had queued but not yet received are lost to it",
                           self._describe())
        self._peer_epoch = ack.receiver_epoch
        if attempt > 1:
            logger.info("message %d to %s acknowledged after %d attempts (%.1f s)%s", seq,
                        self._describe(), attempt, time.monotonic() - start,
                        " as a duplicate" if ack.duplicate else "")

    def close(self) -> None:
        self._closed = True
        self._channel.close()


# --- receiving -----------------------------------------------------------------------------------

# What one peer identity may make a server hold (docs/communication.md, "Threat model").
STREAMS_PER_PEER = 4       # concurrent calls (messages and heartbeats) per peer identity
SPARE_WORKERS = 8          # workers that only turn calls away (identity refused, over a cap)
FIRST_DATA_TIMEOUT = 15.0  # s from the opening of a call to its first chunk / heartbeat
IDLE_TIMEOUT = 60.0        # s between two chunks of one message
_WATCH_PERIOD = 0.25


class _Slot:
    """One admitted call: whose it is and until when it may stay silent."""
    __slots__ = ("key", "context", "deadline", "expired", "reserved")

    def __init__(self, key: str, context, deadline: float):
        self.key, self.context, self.deadline, self.expired = key, context, deadline, ""
        self.reserved: Optional[Tuple[str, int]] = None  # (sender, bytes of its receive buffer)


class Admission:
    """Caps the calls each peer identity holds open, and cancels calls that go silent.

    A call is admitted (or turned away) when it opens, before anything is read from it; a single
    watchdog thread cancels admitted calls whose next chunk is overdue, which frees their worker.
    """

    def __init__(self):
        self._per_peer, self._first, self._idle = STREAMS_PER_PEER, FIRST_DATA_TIMEOUT, IDLE_TIMEOUT
        self._lock = threading.Lock()
        self._open: Dict[str, int] = {}
        self._buffered: Dict[str, int] = {}  # sender -> bytes of its messages being received
        self._slots: set = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="msf-watchdog", daemon=True)
        self._thread.start()

    def enter(self, key: str, context, share: int = 1) -> Optional[_Slot]:
        """A slot for a new call of ``key``; None when ``key`` already holds ``share`` x the per-peer
        number of calls (``share`` > 1 when several peers may hide behind one key)."""
        with self._lock:
            if self._open.get(key, 0) >= self._per_peer * share:
                return None
            self._open[key] = self._open.get(key, 0) + 1
            slot = _Slot(key, context, time.monotonic() + self._first)
            self._slots.add(slot)
            return slot

    def reserve(self, slot: _Slot, sender: str, nbytes: int, limit: int) -> bool:
        """Count a receive buffer of ``nbytes`` against ``sender``'s ``limit`` of bytes in flight;
        False when its other messages in flight already hold too much (one message always fits)."""
        with self._lock:
            used = self._buffered.get(sender, 0)
            if used and used + nbytes > limit:
                return False
            self._buffered[sender] = used + nbytes
            slot.reserved = (sender, nbytes)
            return True

    def expect_data(self, slot: _Slot, first: bool = False) -> None:
        """The call must deliver its next piece within the first-data or idle timeout."""
        slot.deadline = time.monotonic() + (self._first if first else self._idle)

    def hold(self, slot: _Slot) -> None:
        """The call waits on us (queue space), not on the peer: no deadline."""
        slot.deadline = None

    def leave(self, slot: _Slot) -> None:
        with self._lock:
            if slot.reserved is not None:
                sender, nbytes = slot.reserved
                self._buffered[sender] -= nbytes
                if not self._buffered[sender]:
                    del self._buffered[sender]
            self._slots.discard(slot)
            self._open[slot.key] -= 1
            if not self._open[slot.key]:
                del self._open[slot.key]

    def _watch(self) -> None:
        while not self._stop.wait(_WATCH_PERIOD):
            now = time.monotonic()
            with self._lock:
                overdue = [s for s in self._slots if s.deadline is not None and s.deadline < now]
            for slot in overdue:
                slot.deadline = None
                slot.expired = (f"no data within {self._first:g} s of opening the call or "
                                f"{self._idle:g} s since the last chunk")
                slot.context.cancel()  # the handler's read raises and its worker is freed

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class MessageService:
    """The server side: admits a call, validates its chunk stream, assembles, decodes, queues it.

    ``on_contact(peer, epoch, goodbye)`` is told of every sign of life of a peer (a heartbeat, or the
    first chunk of a message, with ``epoch`` None).
    """

    def __init__(self, inboxes: Mapping[str, Inbox], decode: Callable[[np.ndarray], object], epoch: int,
                 max_message_size: int, material: Optional[TLSMaterial], own_name: str,
                 on_contact: Callable[[str, Optional[int], str], None] = lambda *a: None):
        self._inboxes = inboxes
        self._decode = decode
        self._epoch = epoch
        self._max = max_message_size
        self._material = material
        self._own_name = own_name
        self._on_contact = on_contact
        self.admission = Admission()
        self._log_lock = threading.Lock()
        self._last_warning, self._suppressed = -1e9, 0

    @property
    def max_workers(self) -> int:
        """Enough workers for every peer's admitted calls plus a few that only turn calls away."""
        return STREAMS_PER_PEER * len(self._inboxes) + SPARE_WORKERS

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "SendMessage": grpc.stream_unary_rpc_method_handler(
                self._serve, request_deserializer=None, response_serializer=SendAck.SerializeToString),
            "Beat": grpc.stream_unary_rpc_method_handler(
                self._beat, request_deserializer=None, response_serializer=HeartbeatAck.SerializeToString)})

    def _refuse(self, context, code: grpc.StatusCode, message: str):
        # at most one WARNING a second: a flood of refused calls must not flood the log too
        with self._log_lock:
            now = time.monotonic()
            loud = now - self._last_warning >= 1.0
            if loud:
                self._last_warning, suppressed, self._suppressed = now, self._suppressed, 0
            else:
                self._suppressed += 1
        if loud:
            logger.warning("'%s' refused a call from %s: %s%s", self._own_name, context.peer(), message,
                           f" ({suppressed} more refusals in the last seconds not logged)" if suppressed else "")
        else:
            logger.debug("'%s' refused a call from %s: %s", self._own_name, context.peer(), message)
        context.abort(code, message)

    def _client_cert(self, context) -> Optional[bytes]:
        certs = context.auth_context().get("x509_pem_cert")
        return certs[0] if certs else None

    def _admit(self, context) -> _Slot:
        """Identity (TLS) and the per-peer cap, checked as the call opens, before reading from it."""
        if self._material is not None:
            cert = self._client_cert(context)
            peer, reason = self._material.client_identity(cert, self._inboxes) if cert \
                else ("", "no client certificate")
            if reason:
                self._refuse(context, grpc.StatusCode.PERMISSION_DENIED, reason)
            key = peer
            share = 1
        else:  # plaintext: nothing is authenticated; callers are told apart by their IP only
            key, share = "ip:" + context.peer().rpartition(":")[0], len(self._inboxes)
        slot = self.admission.enter(key, context, share)
        if slot is None:
            logger.info("'%s' turned away a call from %s: '%s' holds the most calls allowed already",
                        self._own_name, context.peer(), key)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"too many concurrent calls from '{key}'; retry later")
        return slot

    def _guarded(self, context, body: Callable[[_Slot], object]):
        slot = self._admit(context)
        try:
            return body(slot)
        except grpc.RpcError:  # the client cancelled or disconnected, or the watchdog timed it out
            reason = slot.expired or "the stream broke off"
            logger.info("a call from %s ended without a result: %s", context.peer(), reason)
            context.abort(grpc.StatusCode.CANCELLED, reason)
        except Abandoned as err:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"not delivered: {err}")
        finally:
            self.admission.leave(slot)

    def _serve(self, request_iterator, context) -> SendAck:
        return self._guarded(context, lambda slot: self._receive(request_iterator, context, slot))

    def _beat(self, request_iterator, context) -> HeartbeatAck:
        return self._guarded(context, lambda slot: self._answer_beat(request_iterator, context, slot))

    def _check_sender(self, context, sender: str, what: str) -> Inbox:
        inbox = self._inboxes.get(sender)
        if inbox is None:
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"unknown sender {sender!r}: not a configured peer of '{self._own_name}'")
        if self._material is not None:
            reason = self._material.check_client(self._client_cert(context), sender)
            if reason:
                self._refuse(context, grpc.StatusCode.PERMISSION_DENIED, f"{what} '{sender}': {reason}")
        return inbox

    def _answer_beat(self, request_iterator, context, slot: _Slot) -> HeartbeatAck:
        raw = next(request_iterator, None)
        if raw is None or next(request_iterator, None) is not None:
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "a heartbeat call carries one Heartbeat")
        try:
            beat = Heartbeat.FromString(raw)
        except Exception as err:  # DecodeError / RuntimeError depending on the protobuf backend
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, f"malformed heartbeat: {err}")
        self._check_sender(context, beat.sender, "heartbeat of")
        self._on_contact(beat.sender, beat.sender_epoch, beat.goodbye[:2000])
        return HeartbeatAck(receiver=self._own_name, receiver_epoch=self._epoch)

    def _receive(self, request_iterator, context, slot: _Slot) -> SendAck:
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        self.admission.expect_data(slot, first=True)
        first = next(request_iterator, None)
        if first is None:
            self._refuse(context, invalid, "empty message stream")
        try:
            chunk, data = decode_chunk(first)
        except ValueError as err:
            self._refuse(context, invalid, f"malformed first chunk: {err}")
        sender, seq, epoch, total = chunk.sender, chunk.seq, chunk.sender_epoch, chunk.total_size
        inbox = self._check_sender(context, sender, "sender")
        if total > self._max:
            self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"message {seq} from '{sender}' has {total} bytes, more than max_message_size "
                         f"{self._max}")
        if seq == 0 or chunk.offset != 0 or len(data) > total:
            self._refuse(context, invalid, f"message from '{sender}': bad first chunk (seq {seq}, offset "
                                           f"{chunk.offset}, {len(data)} of {total} bytes)")
        self._on_contact(sender, None, "")
        verdict = inbox.classify(epoch, seq)
        if verdict == "gap":
            self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION,
                         f"message {seq} from '{sender}' is out of order")
        if verdict == "stale":
            self._refuse_stale(context, sender, seq, epoch, inbox.epoch)
        if verdict == "deliver" and not self.admission.reserve(slot, sender, total, self._max):
            context.abort(grpc.StatusCode.UNAVAILABLE, f"other messages from '{sender}' are still being "
                                                       f"received (max_message_size {self._max} bytes in "
                                                       f"flight per peer); retry later")
        # np.empty, not bytearray: the pages are touched (faulted in) chunk by chunk while the
        # rest streams in, instead of all at once by bytearray's zero fill.
        buffer = np.empty(total, dtype=np.uint8) if verdict == "deliver" else None
        received = self._assemble(request_iterator, context, slot, chunk, data, buffer)
        if received != total:
            self._refuse(context, invalid, f"message {seq} from '{sender}' ended early: {received} of "
                                           f"{total} bytes")
        if buffer is None:
            return SendAck(seq=seq, duplicate=True, receiver_epoch=self._epoch)
        message = self._decode_or_refuse(context, buffer, sender, seq)
        del buffer
        self.admission.hold(slot)
        try:
            delivered = inbox.deliver(epoch, seq, message, context.is_active)
        except GapError as err:
            self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION, str(err))
        except StaleEpochError as err:
            self._refuse_stale(context, sender, seq, epoch, err.current)
        return SendAck(seq=seq, duplicate=not delivered, receiver_epoch=self._epoch)

    def _refuse_stale(self, context, sender: str, seq: int, epoch: int, current: int):
        context.set_trailing_metadata(((_CURRENT_EPOCH_KEY, str(current)),))
        self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION,
                     f"{_STALE} {epoch} of message {seq} from '{sender}' is older than its current "
                     f"epoch {current} (a replayed or stale message)")

    def _decode_or_refuse(self, context, buffer: np.ndarray, sender: str, seq: int):
        """Decode; every failure becomes a precise status (never UNKNOWN), the server keeps serving."""
        what = f"message {seq} from '{sender}'"
        try:
            return self._decode(buffer)
        except DecodeLimitExceeded as err:
            self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED, f"{what} refused: {err}")
        except MemoryError:
            self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED, f"{what}: out of memory decoding it")
        except (ValueError, TypeError) as err:
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, f"{what} does not decode: {err}")
        except Exception as err:  # noqa: BLE001 - e.g. MindSpore refusing a buffer: still the message's fault
            logger.exception("decoding %s failed", what)
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                         f"{what} does not decode: {type(err).__name__}: {err}")

    def _assemble(self, request_iterator, context, slot: _Slot, first: MessageChunk, data: memoryview,
                  buffer: Optional[np.ndarray]) -> int:
        """Copy the chunks into ``buffer`` (or just count them); returns the bytes received."""
        total, received = first.total_size, 0
        while True:
            if buffer is not None and len(data):
                buffer[received:received + len(data)] = np.frombuffer(data, dtype=np.uint8)
            received += len(data)
            self.admission.expect_data(slot)
            raw = next(request_iterator, None)
            if raw is None:
                return received
            try:
                chunk, data = decode_chunk(raw)
            except ValueError as err:
                self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                             f"message {first.seq} from '{first.sender}': {err}")
            if (chunk.sender != first.sender or chunk.seq != first.seq or chunk.total_size != total
                    or chunk.sender_epoch != first.sender_epoch or chunk.offset != received
                    or received + len(data) > total):
                self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT,
                             f"message {first.seq} from '{first.sender}': chunk at offset {chunk.offset} "
                             f"({len(data)} bytes) does not continue the stream at {received} of {total}")

    def close(self) -> None:
        self.admission.close()


def start_server(address: str, service: MessageService,
                 material: Optional[TLSMaterial]) -> Tuple[grpc.Server, futures.ThreadPoolExecutor]:
    """Bind and start the server; raises OSError naming the address when it cannot bind.

    Threads are bounded: ``service.max_workers`` workers, and gRPC turns away calls beyond that
    many (RESOURCE_EXHAUSTED, retried by senders) instead of queueing them for a worker.
    """
    workers = service.max_workers
    executor = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="msf-recv")
    server = grpc.server(executor, handlers=[service.handler()], maximum_concurrent_rpcs=workers, options=[
        ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
        ("grpc.max_receive_message_length", MAX_CHUNK_SIZE + _CHUNK_OVERHEAD),
        ("grpc.max_send_message_length", 1 << 20),
        # a client whose host vanished (no RST) is noticed within ~15 s and its calls cancelled
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 4_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.max_connection_idle_ms", 120_000),  # connections without calls are closed
    ])
    try:
        if material is None:
            port = server.add_insecure_port(address)
        else:
            creds = grpc.ssl_server_credentials([(material.server_key_pem, material.server_chain_pem)],
                                                root_certificates=material.ca_pem, require_client_auth=True)
            port = server.add_secure_port(address, creds)
    except RuntimeError as err:
        executor.shutdown(wait=False)
        raise OSError(f"cannot listen on {address}: {err}") from err
    if not port:
        executor.shutdown(wait=False)
        raise OSError(f"cannot listen on {address} (address in use or not local)")
    server.start()
    return server, executor
