"""Tensor codec: bit-exact round trips and refusal of malformed input."""
from collections import OrderedDict

import mindspore_federated  # noqa: F401  (selects protobuf's native backend before mindspore)
import mindspore as ms
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mindspore_federated._proto.vfl_pb2 import TensorListProto, TensorProto
from mindspore_federated.communication import codec

NUMPY_DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                "float16", "float32", "float64"]
MS_DTYPES = [ms.bool_, ms.int8, ms.int16, ms.int32, ms.int64, ms.uint8, ms.uint16, ms.uint32,
             ms.uint64, ms.float16, ms.float32, ms.float64, ms.bfloat16]


def _bits(tensor: ms.Tensor) -> bytes:
    """Raw bytes of a tensor, so NaN payloads and signed zeros compare exactly."""
    return tensor.asnumpy().tobytes()


def _random_bytes(rng, shape, itemsize) -> np.ndarray:
    return rng.integers(0, 256, size=int(np.prod(shape)) * itemsize, dtype=np.uint8)


@pytest.mark.parametrize("dtype", MS_DTYPES, ids=str)
@pytest.mark.parametrize("decoder", ["loads", "decode"])
def test_every_dtype_round_trips_bit_exactly(dtype, decoder):
    rng = np.random.default_rng(0)
    np_dtype = ms.Tensor(np.zeros(1), dtype).asnumpy().dtype
    if dtype == ms.bool_:
        source = rng.integers(0, 2, size=(3, 5)).astype(bool)
    else:  # arbitrary bit patterns: NaNs, infinities, denormals and negative zero included
        source = _random_bytes(rng, (3, 5), np_dtype.itemsize).view(np_dtype).reshape(3, 5)
    tensor = ms.Tensor(source) if dtype != ms.bfloat16 else ms.Tensor(source, dtype)
    assert tensor.dtype == dtype
    data = codec.dumps({"t": tensor})
    out = codec.loads(data) if decoder == "loads" else codec.decode(codec.parse(data))
    assert out["t"].dtype == dtype
    assert out["t"].shape == (3, 5)
    assert _bits(out["t"]) == _bits(tensor)


def test_raw_data_is_little_endian_bytes_not_base64():
    values = np.array([1.0, -2.5], dtype=np.float32)
    proto = codec.parse(codec.dumps({"x": ms.Tensor(values)}))
    assert proto.tensors[0].raw_data == values.astype("<f4").tobytes()
    assert proto.tensors[0].data_type == "float32"
    assert list(proto.tensors[0].dims) == [2]


def test_nesting_key_order_scalars_and_empty_tensors():
    message = OrderedDict([
        ("z_first", ms.Tensor(np.float32(3.5))),
        ("nested", OrderedDict([("b", ms.Tensor(np.zeros((0, 4), np.float16))),
                                ("a", OrderedDict([("deep", ms.Tensor(np.arange(3, dtype=np.int64)))]))])),
        ("a_last", np.array([True, False])),
    ])
    for out in (codec.loads(codec.dumps(message)), codec.decode(codec.encode(message))):
        assert list(out) == ["z_first", "nested", "a_last"]
        assert list(out["nested"]) == ["b", "a"]
        assert out["z_first"].shape == () and float(out["z_first"].asnumpy()) == 3.5
        assert out["nested"]["b"].shape == (0, 4) and out["nested"]["b"].dtype == ms.float16
        np.testing.assert_array_equal(out["nested"]["a"]["deep"].asnumpy(), [0, 1, 2])
        np.testing.assert_array_equal(out["a_last"].asnumpy(), [True, False])


def test_fast_serializer_matches_protobuf():
    message = {"a": ms.Tensor(np.ones((2, 2), np.float32)), "n": {"b": ms.Tensor(np.int32(7))}}
    assert codec.parse(codec.dumps(message, name="m", send_addr="s", recv_addr="r")) == \
        codec.encode(message, name="m", send_addr="s", recv_addr="r")
    segments = codec.dumps_segments(message, name="m", send_addr="s", recv_addr="r")
    assert b"".join(bytes(s) for s in segments) == codec.dumps(message, name="m", send_addr="s",
                                                               recv_addr="r")
    assert any(isinstance(s, memoryview) for s in segments)   # payloads are views, not copies


def test_decoding_a_writable_buffer_copies_nothing():
    data = bytearray(codec.dumps({"x": ms.Tensor(np.arange(1024, dtype=np.float32))}))
    out = codec.loads(data, as_numpy=True)["x"]
    assert np.shares_memory(out, np.frombuffer(data, np.uint8))


def test_unsupported_values_are_rejected_with_their_key():
    with pytest.raises(TypeError, match="'bad'"):
        codec.dumps({"bad": [1, 2, 3]})
    with pytest.raises(TypeError, match="keys must be str"):
        codec.dumps({1: ms.Tensor(1.0)})


def _tensor_list(tensor: TensorProto) -> bytes:
    proto = TensorListProto(length=1, key_order=[tensor.ref_key])
    proto.tensors.append(tensor)
    return proto.SerializeToString()


@pytest.mark.parametrize("decode", [codec.loads, lambda b: codec.decode(codec.parse(b))],
                         ids=["loads", "decode"])
@pytest.mark.parametrize("tensor, message", [
    (TensorProto(ref_key="w", dims=[2], data_type="float32", raw_data=b"\0" * 7), "'w'.*7 bytes"),
    (TensorProto(ref_key="w", dims=[2, -1], data_type="float32"), "'w'.*negative"),
    (TensorProto(ref_key="w", dims=[1], data_type="float128", raw_data=b"\0" * 16), "'w'.*float128"),
    (TensorProto(ref_key="w", dims=[1], data_type="object", raw_data=b"\0" * 8), "'w'.*object"),
    (TensorProto(ref_key="w", dims=[3], size=4, data_type="int8", raw_data=b"\0" * 3), "'w'.*size"),
])
def test_inconsistent_tensors_raise_value_error_naming_the_tensor(decode, tensor, message):
    with pytest.raises(ValueError, match=message):
        decode(_tensor_list(tensor))


def test_duplicate_keys_and_bad_key_order_are_refused():
    proto = TensorListProto(length=2, key_order=["a", "a"])
    proto.tensors.extend([TensorProto(ref_key="a", dims=[], data_type="int8", raw_data=b"\1")] * 2)
    with pytest.raises(ValueError, match="duplicate"):
        codec.loads(proto.SerializeToString())
    proto = TensorListProto(length=1, key_order=["b"])
    proto.tensors.append(TensorProto(ref_key="a", dims=[], data_type="int8", raw_data=b"\1"))
    with pytest.raises(ValueError, match="key_order"):
        codec.loads(proto.SerializeToString())


def test_every_truncation_of_a_message_raises_value_error():
    data = codec.dumps({"a": ms.Tensor(np.arange(6, dtype=np.float32)),
                        "n": {"b": ms.Tensor(np.array([1, 2], np.int64))}})
    for cut in range(1, len(data)):
        with pytest.raises(ValueError):
            codec.loads(data[:cut])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_never_crash_the_decoder(data):
    try:
        codec.loads(data)
    except ValueError:
        pass


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(NUMPY_DTYPES).flatmap(
    lambda name: hnp.arrays(np.dtype(name), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))))
def test_property_round_trip_of_random_arrays(array):
    out = codec.loads(codec.dumps({"x": array}))["x"]
    assert out.shape == array.shape
    assert out.asnumpy().dtype == array.dtype
    assert out.asnumpy().tobytes() == array.tobytes()


# --- pinned wire bytes (a round trip alone would not notice a symmetric change) --------------------

_HALF = [1.0, -2.0, 0.5, 65504.0, -0.0, float("inf"), 2.0 ** -24]
_HALF_WIRE = bytes.fromhex("003c" "00c0" "0038" "ff7b" "0080" "007c" "0100")
_BF16 = [1.0, -2.0, 0.5, 3.0, -0.0, float("inf"), 2.0 ** -133]
_BF16_WIRE = bytes.fromhex("803f" "00c0" "003f" "4040" "0080" "807f" "0100")


def _message_bytes(data_type: bytes, payload: bytes) -> bytes:
    """TensorListProto {length: 1, key_order: ["h"], tensors: [{name, ref_key: "h", dims: [7],
    data_type, size: 7, raw_data}]} written out field by field."""
    tensor = (b"\x0a\x01h" b"\x12\x01h" b"\x1a\x01\x07" + b"\x22" + bytes([len(data_type)]) + data_type
              + b"\x48\x07" + b"\x2a" + bytes([len(payload)]) + payload)
    return b"\x30\x01" b"\x3a\x01h" + b"\x12" + bytes([len(tensor)]) + tensor


@pytest.mark.parametrize("values, dtype, wire, name", [
    (_HALF, ms.float16, _HALF_WIRE, b"float16"), (_BF16, ms.bfloat16, _BF16_WIRE, b"bfloat16")], ids=["fp16", "bf16"])
def test_half_precision_wire_bytes_are_pinned(values, dtype, wire, name):
    tensor = ms.Tensor(np.array(values, np.float32), dtype)
    assert codec.dumps({"h": tensor}) == _message_bytes(name, wire)
    out = codec.loads(_message_bytes(name, wire))["h"]
    assert out.dtype == dtype
    np.testing.assert_array_equal(out.astype(ms.float32).asnumpy(), np.array(values, np.float32))


# --- decode limits -------------------------------------------------------------------------------

def _bomb_bytes(count):
    tensor = TensorProto(name="b", ref_key="b", dims=[count], data_type="float64", raw_data=bytes(-(-count // 8)),
                         compress_type="min_max", bit_num=1, min_val=0.0, max_val=1.0, size=count)
    return TensorListProto(tensors=[tensor], key_order=["b"], length=1).SerializeToString()


def test_decoded_size_is_bounded_before_allocation():
    import tracemalloc

    limits = codec.DecodeLimits(max_decoded_bytes=1 << 20)
    assert codec.loads(_bomb_bytes(1 << 17), as_numpy=True, limits=limits)["b"].nbytes == 1 << 20
    data = _bomb_bytes(1 << 24)  # 2 MiB on the wire, 128 MiB decoded
    tracemalloc.start()
    try:
        with pytest.raises(codec.DecodeLimitExceeded, match=r"tensor 'b' \(shape \[16777216\], float64\).*"
                                                            r"more than 1048576 bytes"):
            codec.loads(data, limits=limits)
        assert tracemalloc.get_traced_memory()[1] < 1 << 20  # refused before anything was allocated
    finally:
        tracemalloc.stop()


def test_tensor_count_header_size_and_nesting_are_bounded():
    limits = codec.DecodeLimits(max_entries=100, max_header_bytes=4096)
    flat = codec.dumps({f"t{i}": np.zeros(1, np.int8) for i in range(101)})
    with pytest.raises(codec.DecodeLimitExceeded, match="more than 100 tensors and dicts"):
        codec.loads(flat, limits=limits)
    nested = {"a": {f"t{i}": np.zeros(1, np.int8) for i in range(60)}, "b": {f"t{i}": np.zeros(1) for i in range(60)}}
    with pytest.raises(codec.DecodeLimitExceeded, match="more than 100 tensors"):
        codec.loads(codec.dumps(nested), limits=limits)
    with pytest.raises(codec.DecodeLimitExceeded, match="bytes of names/keys/dims"):
        codec.loads(codec.dumps({"k" * 5000: np.zeros(1)}), limits=limits)
    deep = TensorListProto(name="root")
    node = deep
    for i in range(40):
        node.key_order.append(f"d{i}")
        node = node.tensor_list.add(name=f"d{i}")
    with pytest.raises(ValueError, match="nested deeper than 32 levels"):
        codec.loads(deep.SerializeToString(), limits=codec.DecodeLimits())
    assert len(codec.loads(flat)) == 101  # without limits (local use) nothing changes


def test_a_flood_of_empty_fields_stops_the_scan_early():
    import time
    import tracemalloc

    data = b"\x12\x00" * 4_000_000  # 8 MB: four million empty tensors
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(codec.DecodeLimitExceeded, match="more than 10000 tensors and dicts"):
            codec.loads(data, limits=codec.DecodeLimits())
        assert tracemalloc.get_traced_memory()[1] < 8 << 20
    finally:
        tracemalloc.stop()
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_decodes_at_every_buffer_alignment(dtype):
    """Before: a payload at an offset not a multiple of the item size -> 'Unsupported data type'."""
    array = (np.arange(6) - 1j * np.arange(6)).astype(dtype).reshape(2, 3)
    data = codec.dumps({"c": array})
    for pad in range(16):
        buf = np.empty(len(data) + pad, np.uint8)[pad:]
        buf[:] = np.frombuffer(data, np.uint8)
        out = codec.loads(buf)["c"]
        assert out.dtype == getattr(ms, dtype) and np.array_equal(out.asnumpy(), array), pad
