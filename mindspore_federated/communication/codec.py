"""Tensor codec: nested dicts of tensors <-> ``TensorListProto`` <-> bytes.

Tensors travel as their raw little-endian bytes (no base64), copied once into the protobuf
and viewed, not copied, on the way out. Decoding never trusts the wire: dtypes, shapes and
byte counts are checked before any buffer is interpreted, so a corrupted message raises
``ValueError`` naming the tensor instead of producing garbage or crashing.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping, Optional, Union

import mindspore as ms
import numpy as np
from google.protobuf.message import DecodeError

from mindspore_federated._proto.vfl_pb2 import TensorListProto, TensorProto
from mindspore_federated.communication._wire import DecodeLimitExceeded, TooManyFields, scan_fields, varint

TensorLike = Union[ms.Tensor, np.ndarray]

# Every dtype MindSpore can hold, by the numpy name that travels in TensorProto.data_type.
# numpy learns "bfloat16" from MindSpore's import (it registers the type).
_WIRE_DTYPES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "bfloat16", "complex64", "complex128",
)
_MAX_NESTING = 32


@dataclass(frozen=True)
class DecodeLimits:
    """What one received message may make the receiver allocate, checked before allocating.

    ``max_decoded_bytes``: sum over the tensors of elements x dtype size (the size of the decoded
    tensors; for compressed tensors this is the expansion, which the wire size does not bound).
    ``max_entries``: tensors plus nested dicts (each costs a Python/MindSpore object, ~3 KiB).
    ``max_header_bytes``: the fields of one dict or tensor besides tensor payloads (names, keys, dims).
    Nesting depth is always bounded by 32.
    """
    max_decoded_bytes: int = 8 << 30
    max_entries: int = 10_000
    max_header_bytes: int = 4 << 20


def _numpy_dtype(name: str, where: str) -> np.dtype:
    if name not in _WIRE_DTYPES:
        raise ValueError(f"tensor '{where}': unsupported data_type {name!r} "
                         f"(expected one of {', '.join(_WIRE_DTYPES)})")
    return np.dtype(name)


def to_numpy(value: TensorLike, where: str = "") -> np.ndarray:
    """A C-contiguous little-endian numpy view (or copy when unavoidable) of ``value``."""
    if isinstance(value, ms.Tensor):
        array = value.asnumpy()
    elif isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, (bool, int, float, np.generic)):
        array = np.asarray(value)
    else:
        raise TypeError(f"tensor '{where}': expected mindspore.Tensor or numpy.ndarray, "
                        f"got {type(value).__name__}")
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    # np.ascontiguousarray would promote a scalar to shape (1,)
    return array if array.flags.c_contiguous else np.array(array, order="C")


def _encode_tensor(key: str, value: TensorLike, compress_configs: Optional[Mapping]) -> TensorProto:
    array = to_numpy(value, key)
    if array.dtype.name not in _WIRE_DTYPES:
        raise TypeError(f"tensor '{key}': dtype {array.dtype} cannot be sent")
    proto = TensorProto(name=key, ref_key=key, dims=array.shape,
                        data_type=array.dtype.name, size=array.size)
    config = compress_configs.get(key) if compress_configs else None
    if config is not None:
        from mindspore_federated.communication import compression
        compression.encode_into(proto, array, config)
    else:
        proto.raw_data = array.tobytes()
    return proto


def encode(tensors: Mapping, name: str = "", compress_configs: Optional[Mapping] = None,
           send_addr: str = "", recv_addr: str = "") -> TensorListProto:
    """Encode a (nested) mapping of tensors; ``compress_configs`` maps leaf keys to CompressConfig."""
    return _encode_list(tensors, name, compress_configs, send_addr, recv_addr, depth=0)


def _encode_list(tensors: Mapping, name: str, compress_configs, send_addr: str, recv_addr: str,
                 depth: int) -> TensorListProto:
    if not isinstance(tensors, Mapping):
        raise TypeError(f"'{name or '<root>'}': expected a dict of tensors, got {type(tensors).__name__}")
    if depth > _MAX_NESTING:
        raise ValueError(f"'{name}': dicts nested deeper than {_MAX_NESTING} levels")
    proto = TensorListProto(name=name, send_addr=send_addr, recv_addr=recv_addr, length=len(tensors))
    for key, value in tensors.items():
        if not isinstance(key, str):
            raise TypeError(f"'{name or '<root>'}': dict keys must be str, got {key!r}")
        proto.key_order.append(key)
        if isinstance(value, Mapping):
            proto.tensor_list.append(_encode_list(value, key, compress_configs, "", "", depth + 1))
        else:
            proto.tensors.append(_encode_tensor(key, value, compress_configs))
    return proto


def decode_tensor(proto: TensorProto, as_numpy: bool = False) -> TensorLike:
    """Validate and decode one TensorProto into a mindspore.Tensor (or numpy array)."""
    return _decode_tensor(proto, proto.raw_data, as_numpy)


def _decode_tensor(proto: TensorProto, raw, as_numpy: bool) -> TensorLike:
    """Decode ``proto`` whose payload is ``raw`` (bytes, or a view into the received buffer)."""
    where = proto.ref_key or proto.name or "<unnamed>"
    dtype = _numpy_dtype(proto.data_type, where)
    dims = list(proto.dims)
    if any(d < 0 for d in dims):
        raise ValueError(f"tensor '{where}': negative dimension in shape {dims}")
    count = math.prod(dims)
    if proto.size and proto.size != count:
        raise ValueError(f"tensor '{where}': size field {proto.size} disagrees with shape {dims}")
    if proto.compress_type:
        from mindspore_federated.communication import compression
        proto.raw_data = bytes(raw)
        array = compression.decode_from(proto, dtype, dims)
    else:
        expected = count * dtype.itemsize
        if len(raw) != expected:
            raise ValueError(f"tensor '{where}': raw_data holds {len(raw)} bytes, "
                             f"shape {dims} of {dtype.name} needs {expected}")
        array = np.frombuffer(raw, dtype=dtype).reshape(dims) if count else np.empty(dims, dtype)
        if not np.little_endian:  # pragma: no cover - every supported platform is little-endian
            array = array.byteswap()
    if as_numpy:
        return array
    if dtype.kind == "c" and not array.flags.aligned:
        array = array.copy()  # MindSpore refuses misaligned complex buffers ("Unsupported data type")
    if array.ndim == 0:
        return ms.Tensor(array)  # from_numpy would turn a scalar into shape [1]
    if not array.flags.writeable:
        # Tensor.from_numpy shares memory but needs a writable buffer; one copy is the floor.
        array = array.copy()
    return ms.Tensor.from_numpy(array)


def decode(proto: TensorListProto, as_numpy: bool = False) -> "OrderedDict[str, object]":
    """Decode a TensorListProto into an OrderedDict, nesting and key order preserved."""
    return _decode_list(proto, as_numpy, depth=0)


def _decode_list(proto: TensorListProto, as_numpy: bool, depth: int) -> "OrderedDict[str, object]":
    where = proto.name or "<root>"
    if depth > _MAX_NESTING:
        raise ValueError(f"'{where}': dicts nested deeper than {_MAX_NESTING} levels")
    entries = {}
    for tensor in proto.tensors:
        entries.setdefault(tensor.ref_key, []).append(lambda t=tensor: decode_tensor(t, as_numpy))
    for sub in proto.tensor_list:
        entries.setdefault(sub.name, []).append(lambda p=sub: _decode_list(p, as_numpy, depth + 1))
    return _assemble(proto, entries, where)


# Wire tags (field number << 3 | wire type 2 = length-delimited) of the fields spliced by hand.
_TAG_RAW_DATA = varint(TensorProto.RAW_DATA_FIELD_NUMBER << 3 | 2)
_TAG_TENSORS = varint(TensorListProto.TENSORS_FIELD_NUMBER << 3 | 2)
_TAG_TENSOR_LIST = varint(TensorListProto.TENSOR_LIST_FIELD_NUMBER << 3 | 2)


def _tensor_segments(key: str, value: TensorLike, compress_configs: Optional[Mapping]) -> list:
    if compress_configs and compress_configs.get(key) is not None:
        return [_encode_tensor(key, value, compress_configs).SerializeToString()]
    array = to_numpy(value, key)
    if array.dtype.name not in _WIRE_DTYPES:
        raise TypeError(f"tensor '{key}': dtype {array.dtype} cannot be sent")
    header = TensorProto(name=key, ref_key=key, dims=array.shape, data_type=array.dtype.name,
                         size=array.size).SerializeToString()
    if not array.size:
        return [header]
    raw = memoryview(array.reshape(-1).view(np.uint8))
    return [header, _TAG_RAW_DATA, varint(raw.nbytes), raw]


def _list_segments(tensors: Mapping, name: str, compress_configs, send_addr: str, recv_addr: str,
                   depth: int) -> list:
    header = _encode_list({}, name, None, send_addr, recv_addr, depth)  # validates name/depth
    if not isinstance(tensors, Mapping):
        raise TypeError(f"'{name or '<root>'}': expected a dict of tensors, got {type(tensors).__name__}")
    header.length = len(tensors)
    segments = [None]
    for key, value in tensors.items():
        if not isinstance(key, str):
            raise TypeError(f"'{name or '<root>'}': dict keys must be str, got {key!r}")
        header.key_order.append(key)
        if isinstance(value, Mapping):
            tag, child = _TAG_TENSOR_LIST, _list_segments(value, key, compress_configs, "", "", depth + 1)
        else:
            tag, child = _TAG_TENSORS, _tensor_segments(key, value, compress_configs)
        segments += [tag, varint(sum(len(c) if isinstance(c, bytes) else c.nbytes for c in child))]
        segments += child
    segments[0] = header.SerializeToString()
    return segments


def dumps(tensors: Mapping, compress_configs: Optional[Mapping] = None, name: str = "",
          send_addr: str = "", recv_addr: str = "") -> bytes:
    """Serialize a (nested) dict of tensors to the bytes of a TensorListProto.

    Equivalent to ``encode(...).SerializeToString()``, but tensor bytes are copied exactly once:
    protobuf would copy them into the message and again into the output.
    """
    return b"".join(_list_segments(tensors, name, compress_configs, send_addr, recv_addr, 0))


def dumps_segments(tensors: Mapping, compress_configs: Optional[Mapping] = None, name: str = "",
                   send_addr: str = "", recv_addr: str = "") -> list:
    """The bytes of :func:`dumps` as a list of ``bytes`` / ``memoryview`` pieces.

    Tensor payloads are views of the tensors' own memory, so a transport can stream a message
    without materialising it once more.
    """
    return _list_segments(tensors, name, compress_configs, send_addr, recv_addr, 0)


def parse(data: Union[bytes, bytearray, memoryview]) -> TensorListProto:
    """Parse bytes into a TensorListProto, turning protobuf's errors into ValueError."""
    proto = TensorListProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError) as err:
        raise ValueError(f"malformed TensorListProto ({len(data)} bytes): {err}") from err
    return proto


def loads(data: Union[bytes, bytearray, memoryview], as_numpy: bool = False,
          limits: Optional[DecodeLimits] = None) -> "OrderedDict[str, object]":
    """Inverse of :func:`dumps`; raises ValueError for anything malformed.

    Same result as ``decode(parse(data))``, but tensor payloads are read in place: given a
    writable buffer (the transport's bytearray) the returned tensors share its memory, so
    decoding copies nothing. With ``limits``, the whole message is measured before any tensor is
    decoded, and :class:`DecodeLimitExceeded` is raised when it exceeds them.
    """
    view = memoryview(data).cast("B")
    tally = _Tally(limits) if limits is not None else None
    plan = _plan_list(view, 0, len(view), "<root>", depth=0, tally=tally)
    return _build(plan, as_numpy)


class _Tally:
    """Running totals of a message being planned, against its DecodeLimits."""

    def __init__(self, limits: DecodeLimits):
        self.limits, self.entries, self.decoded = limits, 0, 0

    def scan(self, buf: memoryview, start: int, end: int, where: str, spliced: tuple):
        """scan_fields, stopped as soon as the message has too many entries or header bytes."""
        try:
            return scan_fields(buf, start, end, where, spliced, max_header=self.limits.max_header_bytes,
                               max_spans=max(self.limits.max_entries - self.entries, 0))
        except TooManyFields:
            raise DecodeLimitExceeded(f"'{where}': more than {self.limits.max_entries} tensors and dicts "
                                      f"in one message") from None

    def entry(self, where: str) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise DecodeLimitExceeded(f"'{where}': more than {self.limits.max_entries} tensors and "
                                      f"dicts in one message")

    def tensor(self, proto: TensorProto, where: str) -> None:
        dims = list(proto.dims)
        if any(d < 0 for d in dims):
            raise ValueError(f"tensor '{where}': negative dimension in shape {dims}")
        dtype = _numpy_dtype(proto.data_type, where)
        self.decoded += math.prod(dims) * dtype.itemsize
        if self.decoded > self.limits.max_decoded_bytes:
            raise DecodeLimitExceeded(
                f"tensor '{where}' (shape {dims}, {dtype.name}): the message would decode to more "
                f"than {self.limits.max_decoded_bytes} bytes")


def _parse_header(message_type, header: bytes, where: str):
    try:
        return message_type.FromString(header)
    except (DecodeError, RuntimeError) as err:
        raise ValueError(f"malformed {message_type.__name__} at '{where}': {err}") from err


def _plan_list(buf: memoryview, start: int, end: int, where: str, depth: int, tally: Optional[_Tally]):
    """Parse the headers of a (nested) TensorListProto and check limits; decode nothing yet.

    Returns (header, {key: [("t", TensorProto, payload view) | ("l", sub-plan)]}, where).
    """
    if depth > _MAX_NESTING:
        raise ValueError(f"'{where}': dicts nested deeper than {_MAX_NESTING} levels")
    fields = (TensorListProto.TENSORS_FIELD_NUMBER, TensorListProto.TENSOR_LIST_FIELD_NUMBER)
    scan = scan_fields if tally is None else tally.scan
    header_bytes, spans = scan(buf, start, end, where, fields)
    header = _parse_header(TensorListProto, header_bytes, where)
    where = header.name or where
    entries = {}
    for s, e in spans[TensorListProto.TENSORS_FIELD_NUMBER]:
        t_header_bytes, t_spans = scan(buf, s, e, where, (TensorProto.RAW_DATA_FIELD_NUMBER,))
        if tally is not None:
            tally.entry(where)
        tensor = _parse_header(TensorProto, t_header_bytes, where)
        if tally is not None:
            tally.tensor(tensor, tensor.ref_key or where)
        raw_spans = t_spans[TensorProto.RAW_DATA_FIELD_NUMBER]
        raw = buf[raw_spans[-1][0]:raw_spans[-1][1]] if raw_spans else b""
        entries.setdefault(tensor.ref_key, []).append(("t", tensor, raw))
    for s, e in spans[TensorListProto.TENSOR_LIST_FIELD_NUMBER]:
        if tally is not None:
            tally.entry(where)
        sub = _plan_list(buf, s, e, where, depth + 1, tally)
        entries.setdefault(sub[0].name, []).append(("l", sub))
    return header, entries, where


def _build(plan, as_numpy: bool) -> "OrderedDict[str, object]":
    header, entries, where = plan
    thunks = {key: [(lambda e=e: _decode_tensor(e[1], e[2], as_numpy)) if e[0] == "t"
                    else (lambda e=e: _build(e[1], as_numpy)) for e in items]
              for key, items in entries.items()}
    return _assemble(header, thunks, where)


def _assemble(header: TensorListProto, entries: dict, where: str) -> "OrderedDict[str, object]":
    total = sum(len(v) for v in entries.values())
    if any(len(v) > 1 for v in entries.values()):
        raise ValueError(f"'{where}': duplicate keys in message")
    order = list(header.key_order) or list(entries)
    if sorted(order) != sorted(entries) or (header.length and header.length != total):
        raise ValueError(f"'{where}': key_order/length do not match the {total} entries received")
    return OrderedDict((key, entries[key][0]()) for key in order)
