"""Per-tensor compression of the tensors exchanged between parties (SPEC §2.5).

Activations and gradients crossing the party boundary are the whole cost of split learning, so
each tensor may declare a scheme in the yaml, applied by the codec on send and undone on receive:

``min_max`` (b in 1..8 bits, lossy)
    scale = (max - min) / (2^b - 1); q = round((x - min) / scale), packed b bits per value;
    decoded as q * scale + min. Computed in float64, so before the final cast back to the
    tensor's dtype the error is <= scale / 2; the cast adds at most half an ulp of that dtype.
    max == min sends no payload bits that matter (all q = 0) and decodes exactly. NaN/Inf in
    the input raise ValueError: a quantiser fed Inf would silently send garbage.
    Float tensors only; integer/bool tensors are sent uncompressed with a log line (use
    ``bit_pack`` for them, which is lossless).
``bit_pack`` (budget of b in 1..8 bits, lossless)
    offset = min(x); the values x - offset are packed in ``bits = max(1, bit_length(max - min))``
    bits (the fewest that hold the range, possibly fewer than b); the proto's ``bit_num`` records
    the bits actually used. Exact for every integer dtype and range, negative values and
    int64/uint64 extremes included (differences are taken modulo 2^width, never in a wider or
    signed type that could overflow). When ``bits > b`` the tensor goes uncompressed with a log
    line. Float tensors holding only integer values (|x| <= 2^53, no -0.0; e.g. 0/1 attention
    masks or EmbeddingDP output) are packed the same way, losslessly; other float data goes
    uncompressed with a log line.
``fp16`` / ``bf16`` (lossy casting)
    float tensors travel as IEEE half / bfloat16 and are cast back to their dtype on receive
    (relative error <= 2^-11 / 2^-8 for normal numbers). A finite value that overflows the half
    type raises ValueError instead of arriving as Inf. Non-float tensors go uncompressed with a
    log line.

Fallback log lines are WARNING the first time for a given (tensor, reason) and DEBUG after, so a
training loop does not print one per step.

The bit packing is the numpy function pair :func:`pack_bits` / :func:`unpack_bits`: value i of
the stream occupies bits ``i*b .. i*b+b-1`` (LSB first), so the payload is ceil(n*b/8) bytes.
Groups of 8 values are b bytes, assembled by SWAR mask/shift passes over uint64 words.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

logger = logging.getLogger(__name__)

COMPRESS_TYPES = ("min_max", "bit_pack", "fp16", "bf16")
_PACKED_TYPES = ("min_max", "bit_pack")
_HALF_TYPES = {"fp16": "float16", "bf16": "bfloat16"}
_DEFAULT_BIT_NUM = 8
_FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")
# float values whose integer conversion is exact (float64 integers are exact up to 2^53)
_FLOAT_INT_LIMIT = 2 ** 53
_HALF_MAX = {"float16": 65504.0, "bfloat16": float.fromhex("0x1.fep127")}  # largest finite values
# elements per chunk when quantising: keeps the float64 temporaries in cache-sized pieces
_CHUNK = 1 << 16

_WARNED: set = set()


@dataclass(frozen=True)
class CompressConfig:
    """How one exchanged tensor is compressed on the wire.

    ``bit_num`` is the bit budget of ``min_max`` / ``bit_pack`` (1..8, default 8). The half
    casts always use 16 bits: leave ``bit_num`` unset (or 16) for ``fp16`` / ``bf16``.
    """

    compress_type: str
    bit_num: Optional[int] = None

    def __post_init__(self) -> None:
        if not isinstance(self.compress_type, str) or self.compress_type not in COMPRESS_TYPES:
            raise ValueError(f"CompressConfig: compress_type {self.compress_type!r} is not one of "
                             f"{', '.join(COMPRESS_TYPES)}")
        bit_num = self.bit_num
        if bit_num is not None and (not isinstance(bit_num, (int, np.integer)) or isinstance(bit_num, bool)):
            raise ValueError(f"CompressConfig({self.compress_type!r}): bit_num must be an integer, "
                             f"got {type(bit_num).__name__}")
        if self.compress_type in _PACKED_TYPES:
            bit_num = _DEFAULT_BIT_NUM if bit_num is None else int(bit_num)
            if not 1 <= bit_num <= 8:
                raise ValueError(f"CompressConfig({self.compress_type!r}): bit_num {bit_num} is out "
                                 f"of range, expected 1..8")
        else:
            if bit_num is not None and bit_num != 16:
                raise ValueError(f"CompressConfig({self.compress_type!r}): bit_num {bit_num} has no "
                                 f"meaning, the cast always uses 16 bits (leave bit_num unset)")
            bit_num = 16
        object.__setattr__(self, "bit_num", bit_num)


# ---------------------------------------------------------------------------------------------
# bit packing (pure numpy)
# ---------------------------------------------------------------------------------------------

def configs_of(*yamls) -> Dict[str, CompressConfig]:
    """``{tensor_name: CompressConfig}`` declared by one or more party yamls (FLYamlData).

    What a party's communicator needs for everything it sends, known from the yaml alone (before
    any FLModel exists). A tensor declared differently by two yamls is an error.
    """
    configs: Dict[str, CompressConfig] = {}
    for data in yamls:
        for name, conf in data.compress_configs.items():
            config = CompressConfig(conf["compress_type"], conf["bit_num"])
            if configs.setdefault(name, config) != config:
                raise ValueError(f"tensor '{name}': the yamls declare {configs[name]} and {config}")
    return configs


def packed_size(count: int, bits: int) -> int:
    """Bytes taken by ``count`` values of ``bits`` bits: ceil(count * bits / 8)."""
    return (count * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an integer in 1..8, got {bits!r}")


_U64 = np.uint64
_ALL_ONES = (1 << 64) - 1


def _lane_masks(bits: int) -> list:
    """SWAR steps merging 8->16->32->64-bit lanes: (low-lane mask, shift, payload mask, held, lane).

    Before the step that merges pairs of ``lane``-bit lanes, each lane holds ``held`` payload
    bits (bits * lane / 8) at its bottom; the upper lane of each pair moves down by
    ``lane - held`` to sit right above the lower one's payload.
    """
    steps = []
    for lane in (8, 16, 32):
        held = bits * lane // 8
        low = payload = 0
        for k in range(0, 64, 2 * lane):
            low |= ((1 << lane) - 1) << k
            payload |= ((1 << held) - 1) << k
        steps.append((low, lane - held, payload, held, lane))
    return steps


def _field_view(words: np.ndarray, bits: int) -> np.ndarray:
    """The first ``bits`` bytes of every uint64 word, as one opaque item each (copies at memcpy speed)."""
    layout = np.dtype({"names": ["b"], "formats": [f"V{bits}"], "offsets": [0], "itemsize": 8})
    return words.view(layout)["b"]


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack unsigned values < 2^bits (bits in 1..8) into ceil(n*bits/8) bytes, LSB first.

    Each group of 8 one-byte values is one uint64 word; three in-place mask/shift/or passes
    squeeze its lanes together (8 values of b bits in the low 8b bits), then the low b bytes of
    every word are gathered. Values with bits set above ``bits`` would corrupt their neighbours,
    so they raise.
    """
    _check_bits(bits)
    flat = np.asarray(values).reshape(-1)
    if flat.dtype.kind not in "ub":
        raise ValueError(f"pack_bits: expected unsigned integer values, got {flat.dtype}")
    count = flat.size
    if count == 0:
        return b""
    if int(flat.max()) >> bits:
        raise ValueError(f"pack_bits: value {int(flat.max())} does not fit in {bits} bits")
    if bits == 8:
        return flat.astype(np.uint8, copy=False).tobytes()
    groups = -(-count // 8)
    padded = np.zeros(groups * 8, np.uint8)
    padded[:count] = flat
    words = padded.view(_U64)
    high = np.empty_like(words)
    for low, shift, _, _, _ in _lane_masks(bits):
        np.bitwise_and(words, _U64(~low & _ALL_ONES), out=high)
        words &= _U64(low)
        high >>= _U64(shift)
        words |= high
    return _field_view(words, bits).tobytes()[:packed_size(count, bits)]


def unpack_bits(buf, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` uint8 values from ``buf``.

    ``buf`` must hold exactly ceil(count * bits / 8) bytes; anything else raises ValueError.
    """
    _check_bits(bits)
    raw = np.frombuffer(buf, dtype=np.uint8)
    if raw.size != packed_size(count, bits):
        raise ValueError(f"unpack_bits: {raw.size} bytes cannot hold exactly {count} values of "
                         f"{bits} bits (expected {packed_size(count, bits)})")
    if count == 0:
        return np.empty(0, np.uint8)
    if bits == 8:
        return raw.copy()
    groups = -(-count // 8)
    padded = np.zeros(groups * bits, np.uint8)
    padded[:raw.size] = raw
    words = np.zeros(groups, _U64)
    _field_view(words, bits)[...] = padded.view(f"V{bits}")
    spread = np.empty_like(words)
    for _, _, payload, held, lane in reversed(_lane_masks(bits)):
        np.right_shift(words, _U64(held), out=spread)
        spread &= _U64(payload)
        spread <<= _U64(lane)
        words &= _U64(payload)
        words |= spread
    return words.view(np.uint8)[:count]


# ---------------------------------------------------------------------------------------------
# min_max (pure numpy)
# ---------------------------------------------------------------------------------------------

def min_max_quantize(array: np.ndarray, bits: int, where: str = "") -> tuple:
    """Quantise finite float data to ``bits``-bit codes: returns (codes uint8, min, max).

    Raises ValueError for NaN/Inf (their scale would be meaningless).
    """
    _check_bits(bits)
    flat = array.reshape(-1)
    if flat.size == 0:
        return np.empty(0, np.uint8), 0.0, 0.0
    if flat.dtype not in (np.float32, np.float64):  # half types: no fast native min/max
        flat = flat.astype(np.float32)
    lo, hi = float(np.min(flat)), float(np.max(flat))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = "NaN" if (math.isnan(lo) or math.isnan(hi)) else "Inf"
        raise ValueError(f"tensor '{where}': min_max compression of data containing {bad} "
                         f"(min={lo}, max={hi}); the quantised payload would be garbage")
    codes = np.zeros(flat.size, np.uint8)
    if hi == lo:
        return codes, lo, hi
    levels = (1 << bits) - 1
    # Halve everything when hi - lo overflows float64 (|data| near 1.8e308): same quotient.
    shrink = 1.0 if math.isfinite(hi - lo) else 0.5
    lo_s, span = lo * shrink, hi * shrink - lo * shrink
    factor = levels / span
    if not math.isfinite(factor):  # subnormal span: divide instead of multiplying by 1/span
        factor = None
    tmp = np.empty(min(_CHUNK, flat.size), np.float64)
    for start in range(0, flat.size, _CHUNK):
        part = flat[start:start + _CHUNK]
        t = tmp[:part.size]
        t[...] = part
        if shrink != 1.0:
            t *= shrink
        t -= lo_s
        if factor is None:
            t /= span
            t *= levels
        else:
            t *= factor
        np.rint(t, out=t)
        np.clip(t, 0, levels, out=t)
        codes[start:start + part.size] = t
    return codes, lo, hi


def min_max_table(lo: float, hi: float, bits: int, dtype: np.dtype) -> np.ndarray:
    """Decoded value of every code, already in ``dtype``: decode is one table lookup."""
    levels = (1 << bits) - 1
    q = np.arange(levels + 1, dtype=np.float64)
    if hi == lo:
        table = np.full(levels + 1, lo, np.float64)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            table = lo + q * ((hi - lo) / levels)
        table[-1] = hi
        if not np.isfinite(table).all():  # span beyond float64: overflow-safe interpolation
            frac = q / levels
            table = lo * (1.0 - frac) + hi * frac
    return table.astype(dtype)


def min_max_dequantize(codes: np.ndarray, lo: float, hi: float, bits: int, dtype) -> np.ndarray:
    """Inverse of :func:`min_max_quantize` into ``dtype`` (flat)."""
    return min_max_table(lo, hi, bits, np.dtype(dtype))[codes]


# ---------------------------------------------------------------------------------------------
# bit_pack (pure numpy)
# ---------------------------------------------------------------------------------------------

def _unsigned_of(dtype: np.dtype) -> np.dtype:
    return np.dtype(f"uint{dtype.itemsize * 8}")


def _int_bounds(dtype: np.dtype) -> tuple:
    if dtype == np.bool_:
        return 0, 1
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _float_plan(flat: np.ndarray, budget: int):
    """bit_pack plan for float data: (codes, bits, offset) when every value is an exact integer.

    The differences x - min are computed in the float type itself: when their exact value is an
    integer <= 255 it is representable, so IEEE subtraction returns it exactly; codes that do not
    equal their float difference reveal non-integer data.
    """
    work = flat if flat.dtype in (np.float32, np.float64) else flat.astype(np.float32)
    lo, hi = float(np.min(work)), float(np.max(work))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"bit_pack is lossless integer packing and this {flat.dtype.name} tensor holds NaN/Inf"
    if max(-lo, hi) > _FLOAT_INT_LIMIT or lo != math.floor(lo) or hi != math.floor(hi):
        return f"bit_pack is lossless integer packing and this {flat.dtype.name} tensor holds " \
               f"non-integer values (range [{lo}, {hi}])"
    bits = max(1, int(hi - lo).bit_length())
    if bits > budget:
        return f"its range [{lo:g}, {hi:g}] needs {bits} bits, more than bit_num={budget}"
    diff = work - work.dtype.type(lo)
    codes = diff.astype(np.uint8)
    if not np.array_equal(codes, diff):
        return f"bit_pack is lossless integer packing and this {flat.dtype.name} tensor holds " \
               f"non-integer values"
    if lo <= 0.0 <= hi:
        unsigned = _unsigned_of(work.dtype)
        sign_only = unsigned.type(1 << (8 * unsigned.itemsize - 1))
        if np.any(work.view(unsigned) == sign_only):
            return "bit_pack would turn its -0.0 values into +0.0"
    return codes, bits, int(lo)


def _bit_pack_plan(array: np.ndarray, budget: int):
    """(codes uint8, bits, offset) for lossless packing in <= ``budget`` bits, else the reason why not."""
    _check_bits(budget)
    flat = array.reshape(-1)
    if flat.size == 0:
        return np.empty(0, np.uint8), 1, 0
    if flat.dtype.name in _FLOAT_NAMES:
        return _float_plan(flat, budget)
    if flat.dtype.kind not in "iub":
        return f"bit_pack does not apply to {flat.dtype.name}"
    if flat.dtype == np.bool_:
        flat = flat.view(np.uint8)
    lo, hi = int(np.min(flat)), int(np.max(flat))
    bits = max(1, (hi - lo).bit_length())
    if bits > budget:
        return f"its range [{lo}, {hi}] needs {bits} bits, more than bit_num={budget}"
    unsigned = _unsigned_of(flat.dtype)
    diff = flat.view(unsigned) - unsigned.type(lo % (1 << (8 * unsigned.itemsize)))
    return diff.astype(np.uint8), bits, lo


def bit_pack_codes(array: np.ndarray, budget: int) -> Optional[tuple]:
    """Lossless codes of integer/bool (or integer-valued float) data, or None when they need > budget bits.

    Returns (codes uint8, bits, offset) with offset = min as a Python int. Integer differences are
    taken modulo 2^width in the unsigned type of the same width, exact because they lie in
    [0, max - min] < 2^width: no widening, no signed overflow, whatever the dtype and range.
    """
    plan = _bit_pack_plan(array, budget)
    return None if isinstance(plan, str) else plan


def bit_unpack_values(codes: np.ndarray, offset: int, dtype: np.dtype, where: str = "") -> np.ndarray:
    """Inverse of :func:`bit_pack_codes` (flat); ValueError when offset + code leaves ``dtype``."""
    dtype = np.dtype(dtype)
    if dtype.name in _FLOAT_NAMES:
        top = offset + (int(codes.max()) if codes.size else 0)
        if max(abs(offset), abs(top)) > _FLOAT_INT_LIMIT:
            raise ValueError(f"tensor '{where}': bit_pack offset {offset} is outside the exact "
                             f"integer range of {dtype.name}")
        return (codes.astype(np.int64) + offset).astype(dtype)
    lo, hi = _int_bounds(dtype)
    top = offset + (int(codes.max()) if codes.size else 0)
    if offset < lo or top > hi:
        raise ValueError(f"tensor '{where}': bit_pack values {offset}..{top} do not fit {dtype.name} "
                         f"[{lo}, {hi}]")
    if dtype == np.bool_:
        return codes.astype(np.bool_) if offset == 0 else np.ones(codes.size, np.bool_)
    unsigned = _unsigned_of(dtype)
    values = codes.astype(unsigned)
    values += unsigned.type(offset % (1 << (8 * unsigned.itemsize)))
    return values.view(dtype)


# ---------------------------------------------------------------------------------------------
# half casts (pure numpy)
# ---------------------------------------------------------------------------------------------

def half_cast(array: np.ndarray, compress_type: str, where: str = "") -> np.ndarray:
    """Cast float data to float16 / bfloat16, refusing finite values that would become Inf."""
    half = np.dtype(_HALF_TYPES[compress_type])
    if array.dtype == half or array.size == 0:
        return array.astype(half, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        out = array.astype(half)
        # fast path: the input's extremes are within the half type's range, nothing can overflow
        work = array if array.dtype in (np.float32, np.float64) else array.astype(np.float32)
        peak = max(-float(np.min(work)), float(np.max(work)))
    if peak <= _HALF_MAX[half.name]:  # False for NaN too: then look value by value
        return out
    overflow = np.isinf(out) & np.isfinite(array)
    if overflow.any():
        bad = array.reshape(-1)[np.flatnonzero(overflow.reshape(-1))[0]]
        raise ValueError(f"tensor '{where}': {compress_type} compression overflows: value "
                         f"{float(bad)!r} is beyond the range of {half.name}")
    return out


# ---------------------------------------------------------------------------------------------
# codec hooks
# ---------------------------------------------------------------------------------------------

def _fallback(proto, array: np.ndarray, reason: str) -> None:
    """Send ``array`` uncompressed, logging why (WARNING once per tensor and reason)."""
    key = (proto.ref_key, reason)
    level = logging.DEBUG if key in _WARNED else logging.WARNING
    _WARNED.add(key)
    logger.log(level, "tensor '%s': sent uncompressed, %s", proto.ref_key, reason)
    proto.compress_type = ""
    proto.raw_data = array.tobytes()


def encode_into(proto, array: np.ndarray, config: CompressConfig) -> None:
    """Fill the compression fields and payload of ``proto`` (dims/data_type/size already set)."""
    if not isinstance(config, CompressConfig):
        raise TypeError(f"tensor '{proto.ref_key}': compress config must be a CompressConfig, "
                        f"got {type(config).__name__}")
    where = proto.ref_key
    kind = config.compress_type
    is_float = array.dtype.name in _FLOAT_NAMES
    if kind == "min_max":
        if not is_float:
            _fallback(proto, array, f"min_max applies to float tensors, not {array.dtype.name} "
                                    f"(use bit_pack for lossless integer packing)")
            return
        codes, lo, hi = min_max_quantize(array, config.bit_num, where)
        proto.compress_type, proto.bit_num = kind, config.bit_num
        proto.min_val, proto.max_val = lo, hi
        proto.raw_data = pack_bits(codes, config.bit_num)
    elif kind == "bit_pack":
        packed = _bit_pack_plan(array, config.bit_num)
        if isinstance(packed, str):
            _fallback(proto, array, packed)
            return
        codes, bits, offset = packed
        if offset >= 1 << 63:  # uint64 minimum: the int64 field carries it modulo 2^64
            offset -= 1 << 64
        proto.compress_type, proto.bit_num, proto.offset = kind, bits, offset
        proto.raw_data = pack_bits(codes, bits)
    else:
        if not is_float:
            _fallback(proto, array, f"{kind} casting applies to float tensors, not {array.dtype.name}")
            return
        proto.compress_type, proto.bit_num = kind, 16
        proto.raw_data = half_cast(array, kind, where).tobytes()


def decode_from(proto, dtype: np.dtype, dims: list) -> np.ndarray:
    """Undo :func:`encode_into`; every inconsistent field raises ValueError naming the tensor."""
    where = proto.ref_key or proto.name or "<unnamed>"
    kind = proto.compress_type
    count = math.prod(dims)
    raw = proto.raw_data
    dtype = np.dtype(dtype)
    if kind in _PACKED_TYPES:
        bits = proto.bit_num
        if not 1 <= bits <= 8:
            raise ValueError(f"tensor '{where}': {kind} bit_num {bits} is out of range 1..8")
        if len(raw) != packed_size(count, bits):
            raise ValueError(f"tensor '{where}': {kind} payload holds {len(raw)} bytes, {count} "
                             f"values of {bits} bits need {packed_size(count, bits)}")
        codes = unpack_bits(raw, bits, count)
        if kind == "min_max":
            if dtype.name not in _FLOAT_NAMES:
                raise ValueError(f"tensor '{where}': min_max payload for non-float dtype {dtype.name}")
            lo, hi = proto.min_val, proto.max_val
            limit = _HALF_MAX.get(dtype.name, float(np.finfo(np.float32).max)
                                  if dtype == np.float32 else math.inf)
            if not (math.isfinite(lo) and math.isfinite(hi) and -limit <= lo <= hi <= limit):
                raise ValueError(f"tensor '{where}': min_max range [{lo}, {hi}] is not a finite "
                                 f"interval of {dtype.name}")
            flat = min_max_dequantize(codes, lo, hi, bits, dtype)
        else:
            if dtype.kind not in "iub" and dtype.name not in _FLOAT_NAMES:
                raise ValueError(f"tensor '{where}': bit_pack payload for dtype {dtype.name}")
            offset = proto.offset
            if dtype.kind == "u" and offset < 0:  # uint64 minima beyond 2^63 travel modulo 2^64
                offset += 1 << 64
            flat = bit_unpack_values(codes, offset, dtype, where)
        return flat.reshape(dims)
    if kind in _HALF_TYPES:
        if dtype.name not in _FLOAT_NAMES:
            raise ValueError(f"tensor '{where}': {kind} payload for non-float dtype {dtype.name}")
        half = np.dtype(_HALF_TYPES[kind])
        if len(raw) != count * half.itemsize:
            raise ValueError(f"tensor '{where}': {kind} payload holds {len(raw)} bytes, shape {dims} "
                             f"needs {count * half.itemsize}")
        return np.frombuffer(raw, half).astype(dtype).reshape(dims)
    raise ValueError(f"tensor '{where}': unknown compress_type {kind!r} (expected one of "
                     f"{', '.join(COMPRESS_TYPES)})")
