"""Protobuf wire-format primitives for the zero-copy paths of the codec and the transport.

protobuf's parser copies every bytes field; these helpers find the large fields (tensor
payloads, chunk data) in place so they can be viewed instead of copied.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple


class DecodeLimitExceeded(ValueError):
    """A message would make the receiver allocate more than it allows (answered RESOURCE_EXHAUSTED)."""


class TooManyFields(DecodeLimitExceeded):
    """More spliced fields than ``max_spans``."""


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(buf: memoryview, pos: int, end: int, where: str) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError(f"malformed message at '{where}': truncated or oversized varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def scan_fields(buf: memoryview, start: int, end: int, where: str, spliced: tuple,
                max_spans: Optional[int] = None,
                max_header: Optional[int] = None) -> Tuple[bytes, Dict[int, List[Tuple[int, int]]]]:
    """Split a message into (header bytes without the ``spliced`` fields, {field: [(s, e)]}).

    ``max_spans`` / ``max_header`` stop the scan (DecodeLimitExceeded) as soon as there are more
    spliced fields, or more header bytes, than that: a flood of tiny fields is refused before the
    list of their positions (or the header copy) grows with it.
    """
    header, spans, pos, count = bytearray(), {f: [] for f in spliced}, start, 0
    while pos < end:
        field_start = pos
        key, pos = read_varint(buf, pos, end, where)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = read_varint(buf, pos, end, where)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = read_varint(buf, pos, end, where)
            if field in spans:
                if pos + length > end:
                    raise ValueError(f"malformed message at '{where}': field {field} runs past the end")
                count += 1
                if max_spans is not None and count > max_spans:
                    raise TooManyFields(f"'{where}': more than {max_spans} fields {sorted(spans)}")
                spans[field].append((pos, pos + length))
                pos += length
                continue
            pos += length
        else:
            raise ValueError(f"malformed message at '{where}': unsupported wire type {wire_type}")
        if pos > end:
            raise ValueError(f"malformed message at '{where}': field {field} runs past the end")
        header += buf[field_start:pos]
        if max_header is not None and len(header) > max_header:
            raise DecodeLimitExceeded(f"'{where}': more than {max_header} bytes of names/keys/dims")
    return bytes(header), spans
