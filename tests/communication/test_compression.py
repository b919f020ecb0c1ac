"""Per-tensor compression (SPEC §2.5): packing, min_max, bit_pack, half casts, codec integration.

min_max error bound used here: |decoded - x| <= scale/2 * (1 + 1e-9) + half an ulp of the tensor's
dtype at max(|decoded|, |x| + scale/2). The quantiser works in float64, so the scale/2 bound holds
before the final cast back to the tensor's dtype; the cast adds at most half an ulp.
"""
import logging
import math

import mindspore_federated  # noqa: F401  (native protobuf backend before mindspore)
import mindspore as ms
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from mindspore_federated import CompressConfig
from mindspore_federated._proto.vfl_pb2 import TensorListProto
from mindspore_federated.communication import codec, compression
from mindspore_federated.communication.compression import pack_bits, packed_size, unpack_bits

FLOATS = ("float16", "bfloat16", "float32", "float64")
# significand precision p (implicit bit included) and minimum normal exponent per float dtype
PRECISION = {"float16": (11, -14), "bfloat16": (8, -126), "float32": (24, -126), "float64": (53, -1022)}
SIGNED = ("int8", "int16", "int32", "int64")
UNSIGNED = ("uint8", "uint16", "uint32", "uint64")


@pytest.fixture(autouse=True)
def _fresh_warnings():
    """Fallback lines are WARNING once per tensor; each test starts from a clean slate."""
    compression._WARNED.clear()
    yield
    compression._WARNED.clear()


def _round_trip(array, config, key="t"):
    """Encode ``array`` under ``key`` with ``config`` through the codec; (decoded numpy, tensor proto)."""
    data = codec.dumps({key: array}, compress_configs={key: config} if config else None)
    proto = TensorListProto.FromString(data).tensors[0]
    return codec.loads(data, as_numpy=True)[key], proto


def _half_ulp(magnitude: np.ndarray, dtype: str) -> np.ndarray:
    precision, min_exp = PRECISION[dtype]
    with np.errstate(divide="ignore"):
        exp = np.floor(np.log2(magnitude))
    exp = np.maximum(np.where(np.isfinite(exp), exp, min_exp), min_exp)
    return np.exp2(exp - precision)


# --- CompressConfig -------------------------------------------------------------------------------

def test_config_defaults_and_validation():
    assert CompressConfig("min_max").bit_num == 8
    assert CompressConfig("bit_pack", 1).bit_num == 1
    assert CompressConfig("fp16").bit_num == 16 and CompressConfig("bf16", 16).bit_num == 16
    with pytest.raises(ValueError, match="not one of"):
        CompressConfig("zip")
    for bad in (0, 9, -1):
        with pytest.raises(ValueError, match="out of range"):
            CompressConfig("min_max", bad)
    with pytest.raises(ValueError, match="must be an integer"):
        CompressConfig("bit_pack", 2.0)
    with pytest.raises(ValueError, match="must be an integer"):
        CompressConfig("bit_pack", True)
    with pytest.raises(ValueError, match="no meaning"):
        CompressConfig("fp16", 8)
    with pytest.raises(Exception):  # frozen
        CompressConfig("fp16").bit_num = 3


# --- pack_bits / unpack_bits ----------------------------------------------------------------------

@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 1001])
def test_pack_unpack(bits, count):
    values = np.random.default_rng(bits * 1000 + count).integers(0, 1 << bits, count, dtype=np.uint8)
    buf = pack_bits(values, bits)
    assert len(buf) == packed_size(count, bits) == math.ceil(count * bits / 8)
    np.testing.assert_array_equal(unpack_bits(buf, bits, count), values)


def test_pack_layout_is_lsb_first():
    assert pack_bits(np.array([1, 0, 1, 1], np.uint8), 1) == bytes([0b1101])
    assert pack_bits(np.array([5, 3, 7], np.uint8), 3) == bytes([5 | 3 << 3 | (7 & 3) << 6, 7 >> 2])


def test_pack_rejects_bad_input():
    with pytest.raises(ValueError, match="does not fit"):
        pack_bits(np.array([4], np.uint8), 2)
    with pytest.raises(ValueError, match="unsigned"):
        pack_bits(np.array([1], np.int8), 2)
    with pytest.raises(ValueError, match="1..8"):
        pack_bits(np.array([1], np.uint8), 9)
    with pytest.raises(ValueError, match="cannot hold"):
        unpack_bits(b"\x00" * 3, 3, 3)


# --- min_max --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("bits", range(1, 9))
def test_min_max_error_bound(dtype, bits):
    rng = np.random.default_rng(bits)
    x = (rng.standard_normal((37, 29)) * 3 + 1).astype(dtype)
    decoded, proto = _round_trip(x, CompressConfig("min_max", bits))
    assert decoded.dtype == x.dtype and decoded.shape == x.shape
    assert proto.compress_type == "min_max" and proto.bit_num == bits
    assert len(proto.raw_data) == math.ceil(x.size * bits / 8)
    x64, d64 = x.astype(np.float64), decoded.astype(np.float64)
    lo, hi = x64.min(), x64.max()
    assert (proto.min_val, proto.max_val) == (lo, hi)
    scale = (hi - lo) / (2 ** bits - 1)
    bound = scale / 2 * (1 + 1e-9) + _half_ulp(np.maximum(np.abs(d64), np.abs(x64) + scale / 2), dtype)
    assert np.all(np.abs(d64 - x64) <= bound), np.max(np.abs(d64 - x64) - bound)
    assert d64.min() >= lo and d64.max() <= hi  # never outside the data's range


@pytest.mark.parametrize("dtype", FLOATS)
def test_min_max_constant_tensor_is_exact(dtype):
    x = np.full((5, 3), -2.75, dtype)
    decoded, proto = _round_trip(x, CompressConfig("min_max", 3))
    np.testing.assert_array_equal(decoded, x)
    assert len(proto.raw_data) == math.ceil(15 * 3 / 8)


def test_min_max_empty_and_scalar():
    empty, proto = _round_trip(np.zeros((0, 4), np.float32), CompressConfig("min_max", 5))
    assert empty.shape == (0, 4) and empty.dtype == np.float32 and proto.raw_data == b""
    scalar, _ = _round_trip(np.float32(3.5), CompressConfig("min_max", 2))
    assert scalar.shape == () and scalar == np.float32(3.5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_min_max_refuses_nan_inf(bad, dtype):
    x = np.arange(10, dtype=dtype)
    x[3] = bad
    with pytest.raises(ValueError, match="'hidden'.*(NaN|Inf)"):
        codec.dumps({"hidden": x}, compress_configs={"hidden": CompressConfig("min_max")})


def test_min_max_huge_float64_range_does_not_overflow():
    x = np.array([-1.7e308, 0.0, 1e300, 1.7e308])
    decoded, _ = _round_trip(x, CompressConfig("min_max", 8))
    scale = (1.7e308 / 255) * 2
    assert np.all(np.isfinite(decoded))
    assert np.all(np.abs(decoded - x) <= scale / 2 * (1 + 1e-9))


def test_min_max_on_integers_falls_back(caplog):
    x = np.arange(-5, 300, dtype=np.int32)
    with caplog.at_level(logging.WARNING, logger="mindspore_federated.communication.compression"):
        decoded, proto = _round_trip(x, CompressConfig("min_max", 4), key="ids")
    np.testing.assert_array_equal(decoded, x)
    assert proto.compress_type == "" and "'ids'" in caplog.text and "min_max" in caplog.text


def test_min_max_accepts_mindspore_tensor():
    x = ms.Tensor(np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8))
    decoded = codec.loads(codec.dumps({"a": x}, compress_configs={"a": CompressConfig("min_max", 6)}))["a"]
    assert isinstance(decoded, ms.Tensor) and decoded.shape == (8, 8) and decoded.dtype == ms.float32
    assert np.abs(decoded.asnumpy() - x.asnumpy()).max() <= 2 / 63 / 2 + 1e-7


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["float32", "float64"]).flatmap(lambda dt: hnp.arrays(
    dt, st.integers(1, 30), elements=st.floats(allow_nan=False, allow_infinity=False,
                                               width=32 if dt == "float32" else 64))),
       st.integers(1, 8))
def test_min_max_property_extreme_values(x, bits):
    """Arbitrary finite data (subnormals, +-max, tiny and huge spans) stays within the bound."""
    decoded, _ = _round_trip(x, CompressConfig("min_max", bits))
    x64, d64 = x.astype(np.float64), decoded.astype(np.float64)
    assert np.all(np.isfinite(d64))
    half_scale = (x64.max() / 2 - x64.min() / 2) / (2 ** bits - 1)  # scale/2 without overflow
    slack = 1e-12 * np.abs(x64).max() + 5e-324  # float64 arithmetic and subnormal granularity
    with np.errstate(over="ignore"):  # |x| + scale/2 may pass float64's max
        peak = np.minimum(np.abs(x64) + half_scale, np.finfo(np.float64).max)
    bound = half_scale * (1 + 1e-9) + slack + _half_ulp(np.maximum(np.abs(d64), peak), x.dtype.name)
    assert np.all(np.abs(d64 - x64) <= bound)


# --- bit_pack -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", SIGNED + UNSIGNED)
def test_bit_pack_lossless_extremes(dtype):
    info = np.iinfo(dtype)
    lo, hi = int(info.min), int(info.max)
    cases = [
        [lo, lo + 1, lo + 255],                     # bottom of the range, 8 bits
        [hi - 200, hi, hi - 7],                     # top of the range (uint64 above 2^63)
        [lo + 3],                                   # single value: 1 bit
    ]
    if lo < 0:
        cases.append([-100, -1, 0, 27])             # straddling zero
    for values in cases:
        x = np.array(values, dtype=dtype).reshape(-1, 1)
        decoded, proto = _round_trip(x, CompressConfig("bit_pack", 8))
        assert proto.compress_type == "bit_pack", values
        assert proto.bit_num == max(1, (max(values) - min(values)).bit_length())
        assert len(proto.raw_data) == math.ceil(x.size * proto.bit_num / 8)
        assert decoded.dtype == x.dtype and decoded.shape == x.shape
        np.testing.assert_array_equal(decoded, x)


@pytest.mark.parametrize("dtype", SIGNED + UNSIGNED)
def test_bit_pack_full_range_falls_back(dtype, caplog):
    info = np.iinfo(dtype)
    x = np.array([info.min, 0, info.max], dtype=dtype)
    with caplog.at_level(logging.WARNING, logger="mindspore_federated.communication.compression"):
        decoded, proto = _round_trip(x, CompressConfig("bit_pack", 7), key="big")
    np.testing.assert_array_equal(decoded, x)
    assert proto.compress_type == "" and len(proto.raw_data) == x.nbytes
    records = [r for r in caplog.records if "'big'" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert "bit_num=7" in records[0].getMessage()


def test_bit_pack_fallback_warns_once_per_tensor(caplog):
    x = np.array([0, 1000], np.int32)
    with caplog.at_level(logging.DEBUG, logger="mindspore_federated.communication.compression"):
        for _ in range(3):
            _round_trip(x, CompressConfig("bit_pack", 4), key="step_ids")
    levels = [r.levelno for r in caplog.records if "'step_ids'" in r.getMessage()]
    assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG]


def test_bit_pack_bool_and_budget():
    mask = np.random.default_rng(0).random((3, 17)) > 0.5
    decoded, proto = _round_trip(mask, CompressConfig("bit_pack", 1))
    np.testing.assert_array_equal(decoded, mask)
    assert proto.bit_num == 1 and len(proto.raw_data) == math.ceil(51 / 8)
    ones, _ = _round_trip(np.ones(9, bool), CompressConfig("bit_pack", 1))
    np.testing.assert_array_equal(ones, np.ones(9, bool))
    # 0..5 needs 3 bits: fits a budget of 3, not of 2; fewer bits than the budget are used when enough
    x = np.arange(6, dtype=np.int16)
    assert _round_trip(x, CompressConfig("bit_pack", 3))[1].bit_num == 3
    assert _round_trip(x, CompressConfig("bit_pack", 8))[1].bit_num == 3
    assert _round_trip(x, CompressConfig("bit_pack", 2))[1].compress_type == ""


@pytest.mark.parametrize("dtype", FLOATS)
def test_bit_pack_integer_valued_floats(dtype, caplog):
    mask = np.tril(np.ones((16, 16))).astype(dtype)  # an attention mask
    decoded, proto = _round_trip(mask, CompressConfig("bit_pack", 1))
    assert proto.compress_type == "bit_pack" and proto.bit_num == 1 and len(proto.raw_data) == 32
    assert decoded.dtype == mask.dtype
    np.testing.assert_array_equal(decoded, mask)
    shifted = (np.arange(12) - 100).astype(dtype).reshape(3, 4)
    np.testing.assert_array_equal(_round_trip(shifted, CompressConfig("bit_pack", 4))[0], shifted)
    for name, x in (("frac", np.array([0.5, 1.0], dtype)), ("negzero", np.array([-0.0, 1.0], dtype))):
        with caplog.at_level(logging.WARNING, logger="mindspore_federated.communication.compression"):
            decoded, proto = _round_trip(x, CompressConfig("bit_pack", 8), key=name)
        assert proto.compress_type == "" and f"'{name}'" in caplog.text
        assert decoded.tobytes() == x.tobytes()


def test_bit_pack_empty_and_scalar():
    empty, proto = _round_trip(np.zeros((2, 0), np.int64), CompressConfig("bit_pack", 2))
    assert empty.shape == (2, 0) and empty.dtype == np.int64 and proto.raw_data == b""
    scalar, _ = _round_trip(np.int64(-(2 ** 63)), CompressConfig("bit_pack", 1))
    assert scalar.shape == () and scalar == np.int64(-(2 ** 63))


_INT_DTYPES = st.sampled_from(SIGNED + UNSIGNED)


@st.composite
def _int_arrays(draw):
    dtype = np.dtype(draw(_INT_DTYPES))
    info = np.iinfo(dtype)
    width = draw(st.integers(0, 10))  # range spans up to 2^width values, sometimes beyond the budget
    lo = draw(st.integers(int(info.min), int(info.max)))
    hi = min(int(info.max), lo + (1 << width) - 1)
    values = draw(st.lists(st.integers(lo, hi), min_size=0, max_size=40))
    return np.array(values, dtype=dtype), draw(st.integers(1, 8))


@settings(max_examples=300, deadline=None)
@given(_int_arrays())
def test_bit_pack_property_round_trip(case):
    x, budget = case
    decoded, proto = _round_trip(x, CompressConfig("bit_pack", budget))
    assert decoded.dtype == x.dtype
    np.testing.assert_array_equal(decoded, x)
    needed = max(1, (int(x.max()) - int(x.min())).bit_length()) if x.size else 1
    assert (proto.compress_type == "bit_pack") == (needed <= budget)
    if proto.compress_type:
        assert proto.bit_num == needed and len(proto.raw_data) == math.ceil(x.size * needed / 8)


# --- fp16 / bf16 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,rtol,tiny", [("fp16", 2 ** -11, 2 ** -25), ("bf16", 2 ** -8, 2 ** -134)])
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
def test_half_cast_round_trip(kind, rtol, tiny, dtype):
    x = (np.random.default_rng(3).standard_normal(1000) * 50).astype(dtype)
    if kind == "fp16" and dtype == "bfloat16":
        x = np.clip(x.astype(np.float32), -60000, 60000).astype(dtype)
    decoded, proto = _round_trip(x, CompressConfig(kind))
    assert decoded.dtype == x.dtype and decoded.shape == x.shape
    assert proto.compress_type == kind and len(proto.raw_data) == 2 * x.size
    x64, d64 = x.astype(np.float64), decoded.astype(np.float64)
    # one rounding to the half type (rtol = half an ulp) and possibly one back to bf16/fp16
    back = 2.0 ** -PRECISION[dtype][0]
    assert np.all(np.abs(d64 - x64) <= np.abs(x64) * (rtol + back + rtol * back) + tiny)


def test_half_cast_special_values_and_overflow():
    x = np.array([np.nan, np.inf, -np.inf, 0.0, 65504.0], np.float32)
    decoded, _ = _round_trip(x, CompressConfig("fp16"))
    np.testing.assert_array_equal(decoded, x)
    with pytest.raises(ValueError, match="'acts'.*overflows.*70000"):
        codec.dumps({"acts": np.array([1.0, 70000.0], np.float32)},
                    compress_configs={"acts": CompressConfig("fp16")})
    with pytest.raises(ValueError, match="bfloat16"):
        codec.dumps({"acts": np.array([1e39])}, compress_configs={"acts": CompressConfig("bf16")})


def test_half_cast_on_integers_falls_back(caplog):
    x = np.arange(10, dtype=np.int64)
    with caplog.at_level(logging.WARNING, logger="mindspore_federated.communication.compression"):
        decoded, proto = _round_trip(x, CompressConfig("bf16"), key="pos")
    np.testing.assert_array_equal(decoded, x)
    assert proto.compress_type == "" and "'pos'" in caplog.text


# --- through the codec ----------------------------------------------------------------------------

def test_codec_nested_mixed():
    rng = np.random.default_rng(7)
    acts = rng.standard_normal((4, 8, 16)).astype(np.float32)
    mask = np.tril(np.ones((8, 8), np.float16))
    ids = rng.integers(-3, 3, (4, 8)).astype(np.int32)
    grad = rng.standard_normal((4, 8, 16)).astype(np.float32)
    tensors = {"embedding_table": ms.Tensor(acts), "attention_mask": mask, "ids": ids,
               "plain": np.arange(5.0), "output": {"hidden_states": grad, "loss": np.float32(1.5)}}
    configs = {"embedding_table": CompressConfig("min_max", 6),
               "attention_mask": CompressConfig("bit_pack", 1), "ids": CompressConfig("bit_pack", 3), "hidden_states": CompressConfig("bf16")}
    data = codec.dumps(tensors, compress_configs=configs)
    out = codec.loads(data, as_numpy=True)
    assert list(out) == list(tensors) and list(out["output"]) == ["hidden_states", "loss"]
    scale = (acts.max() - acts.min()) / 63
    assert np.abs(out["embedding_table"] - acts).max() <= scale / 2 + 1e-6
    np.testing.assert_array_equal(out["attention_mask"], mask)
    np.testing.assert_array_equal(out["ids"], ids)
    np.testing.assert_array_equal(out["plain"], np.arange(5.0))
    np.testing.assert_allclose(out["output"]["hidden_states"], grad, rtol=2 ** -8, atol=1e-30)
    assert out["output"]["loss"] == np.float32(1.5)
    # the slow path (protobuf objects) agrees with the spliced one
    via_proto = codec.decode(codec.encode(tensors, compress_configs=configs), as_numpy=True)
    np.testing.assert_array_equal(via_proto["embedding_table"], out["embedding_table"])
    uncompressed = len(codec.dumps(tensors))
    assert len(data) < 0.5 * uncompressed


def _corrupt(array, config, **changes):
    proto = codec.encode({"victim": array}, compress_configs={"victim": config})
    tensor = proto.tensors[0]
    for field, value in changes.items():
        setattr(tensor, field, value)
    return proto.SerializeToString()


@pytest.mark.parametrize("config,changes,match", [
    (CompressConfig("min_max", 4), {"raw_data": b"\x00" * 3}, "payload holds 3 bytes"),
    (CompressConfig("min_max", 4), {"bit_num": 0}, "bit_num 0 is out of range"),
    (CompressConfig("min_max", 4), {"bit_num": 9}, "bit_num 9 is out of range"),
    (CompressConfig("min_max", 4), {"bit_num": 5}, "need"),
    (CompressConfig("min_max", 4), {"compress_type": "zstd"}, "unknown compress_type 'zstd'"),
    (CompressConfig("min_max", 4), {"min_val": float("nan")}, "not a finite interval"),
    (CompressConfig("min_max", 4), {"min_val": 5.0, "max_val": 1.0}, "not a finite interval"),
    (CompressConfig("min_max", 4), {"data_type": "int32"}, "non-float"),
    (CompressConfig("min_max", 4), {"data_type": "float16", "max_val": 1e6},
     "not a finite interval of float16"),
    (CompressConfig("bit_pack", 8), {"raw_data": b""}, "payload holds 0 bytes"),
    (CompressConfig("bit_pack", 8), {"data_type": "uint8", "offset": -1}, "do not fit uint8"),
    (CompressConfig("bit_pack", 8), {"data_type": "int8", "offset": 120}, "do not fit int8"),
    (CompressConfig("fp16"), {"raw_data": b"\x00" * 5}, "payload holds 5 bytes"),
    (CompressConfig("fp16"), {"data_type": "int64"}, "non-float"),
])
def test_corrupted_payloads_raise(config, changes, match):
    base = np.arange(16, dtype=np.float32).reshape(4, 4)
    if config.compress_type == "bit_pack":
        base = np.arange(16, dtype=np.int32)
    data = _corrupt(base, config, **changes)
    with pytest.raises(ValueError, match=rf"'victim'.*{match}|{match}.*'victim'"):
        codec.loads(data)
    with pytest.raises(ValueError, match="victim"):
        codec.decode(codec.parse(data))


def test_encode_into_rejects_non_config():
    with pytest.raises(TypeError, match="CompressConfig"):
        codec.dumps({"a": np.zeros(3, np.float32)}, compress_configs={"a": {"compress_type": "fp16"}})
