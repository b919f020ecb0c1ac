"""gRPC transport: a message streamed as chunks, retried until acknowledged, validated on receipt.

Only this module talks to grpc. Chunks are (de)serialized by hand around the payload so that the
bytes of a chunk are copied once on each side (protobuf would copy them twice more).
"""
from __future__ import annotations

import logging
import time
from concurrent import futures
from typing import Callable, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np

import grpc

from mindspore_federated._proto.vfl_pb2 import MessageChunk, SendAck
from mindspore_federated.communication._delivery import Abandoned, GapError, Inbox
from mindspore_federated.communication._wire import scan_fields, varint
from mindspore_federated.communication.tls import ServerProbe, TLSMaterial

logger = logging.getLogger(__name__)

SERVICE = "mindspore.fl.VerticalFederatedTransport"
METHOD = f"/{SERVICE}/SendMessage"
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
                 send_deadline: float):
        self.own_name, self.peer_name, self.address = own_name, peer_name, address
        self._epoch = epoch
        self._chunk_size = chunk_size
        self._send_deadline = send_deadline
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
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 20_000),
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

    def send(self, seq: int, segments: Sequence) -> SendAck:
        """Stream message ``seq`` (the concatenation of the bytes-like ``segments``) and wait for
        its acknowledgement; retry transient failures until the deadline."""
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
                    if code not in _RETRYABLE:
                        raise ConnectionRefusedError(f"{self._describe()} refused message {seq}: "
                                                     f"{code.name}: {details}") from None
                    self._diagnose(details)
                    problem = f"{code.name}: {details}"
                    self._server_checked = False  # the next connection may reach another server
                else:
                    self._after_ack(seq, ack, attempt, start)
                    return ack
            last_error = problem
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

class MessageService:
    """The server side: validates a chunk stream, assembles it, decodes it, hands it to an Inbox."""

    def __init__(self, inboxes: Mapping[str, Inbox], decode: Callable[[np.ndarray], object], epoch: int,
                 max_message_size: int, material: Optional[TLSMaterial], own_name: str):
        self._inboxes = inboxes
        self._decode = decode
        self._epoch = epoch
        self._max = max_message_size
        self._material = material
        self._own_name = own_name

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(SERVICE, {
            "SendMessage": grpc.stream_unary_rpc_method_handler(
                self._serve, request_deserializer=None, response_serializer=SendAck.SerializeToString)})

    def _refuse(self, context, code: grpc.StatusCode, message: str):
        logger.warning("'%s' refused a message from %s: %s", self._own_name, context.peer(), message)
        context.abort(code, message)

    def _serve(self, request_iterator, context) -> SendAck:
        try:
            return self._receive(request_iterator, context)
        except grpc.RpcError:  # the client cancelled or disconnected mid-stream: nothing delivered
            logger.info("a message stream from %s broke off; nothing delivered", context.peer())
            context.abort(grpc.StatusCode.CANCELLED, "stream broke off")
        except Abandoned as err:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"not delivered: {err}")

    def _receive(self, request_iterator, context) -> SendAck:
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        first = next(request_iterator, None)
        if first is None:
            self._refuse(context, invalid, "empty message stream")
        try:
            chunk, data = decode_chunk(first)
        except ValueError as err:
            self._refuse(context, invalid, f"malformed first chunk: {err}")
        sender, seq, epoch, total = chunk.sender, chunk.seq, chunk.sender_epoch, chunk.total_size
        inbox = self._inboxes.get(sender)
        if inbox is None:
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"unknown sender {sender!r}: not a configured peer of '{self._own_name}'")
        if self._material is not None:
            certs = context.auth_context().get("x509_pem_cert")
            reason = self._material.check_client(certs[0], sender) if certs else "no client certificate"
            if reason:
                self._refuse(context, grpc.StatusCode.PERMISSION_DENIED, f"sender '{sender}': {reason}")
        if total > self._max:
            self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"message {seq} from '{sender}' has {total} bytes, more than max_message_size "
                         f"{self._max}")
        if seq == 0 or chunk.offset != 0 or len(data) > total:
            self._refuse(context, invalid, f"message from '{sender}': bad first chunk (seq {seq}, offset "
                                           f"{chunk.offset}, {len(data)} of {total} bytes)")
        verdict = inbox.classify(epoch, seq)
        if verdict == "gap":
            self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION,
                         f"message {seq} from '{sender}' is out of order")
        # np.empty, not bytearray: the pages are touched (faulted in) chunk by chunk while the
        # rest streams in, instead of all at once by bytearray's zero fill.
        buffer = np.empty(total, dtype=np.uint8) if verdict == "deliver" else None
        received = self._assemble(request_iterator, context, chunk, data, buffer)
        if received != total:
            self._refuse(context, invalid, f"message {seq} from '{sender}' ended early: {received} of "
                                           f"{total} bytes")
        if buffer is None:
            return SendAck(seq=seq, duplicate=True, receiver_epoch=self._epoch)
        try:
            message = self._decode(buffer)
        except (ValueError, TypeError) as err:
            self._refuse(context, invalid, f"message {seq} from '{sender}' does not decode: {err}")
        try:
            delivered = inbox.deliver(epoch, seq, message, context.is_active)
        except GapError as err:
            self._refuse(context, grpc.StatusCode.FAILED_PRECONDITION, str(err))
        return SendAck(seq=seq, duplicate=not delivered, receiver_epoch=self._epoch)

    def _assemble(self, request_iterator, context, first: MessageChunk, data: memoryview,
                  buffer: Optional[np.ndarray]) -> int:
        """Copy the chunks into ``buffer`` (or just count them); returns the bytes received."""
        total, received = first.total_size, 0
        while True:
            if buffer is not None and len(data):
                buffer[received:received + len(data)] = np.frombuffer(data, dtype=np.uint8)
            received += len(data)
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


def start_server(address: str, service: MessageService, material: Optional[TLSMaterial],
                 max_workers: int) -> Tuple[grpc.Server, futures.ThreadPoolExecutor]:
    """Bind and start the server; raises OSError naming the address when it cannot bind."""
    executor = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="msf-recv")
    server = grpc.server(executor, handlers=[service.handler()], options=[
        ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
        ("grpc.max_receive_message_length", MAX_CHUNK_SIZE + _CHUNK_OVERHEAD),
        ("grpc.max_send_message_length", 1 << 20),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
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

