"""Protobuf wire-format primitives for the zero-copy paths of the codec and the transport.

protobuf's parser copies every bytes field; these helpers find the large fields (tensor
payloads, chunk data) in place so they can be viewed instead of copied.
"""
from __future__ import annotations

from typing import Dict, List, Tuple


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


def scan_fields(buf: memoryview, start: int, end: int, where: str, spliced: tuple) -> Tuple[bytes, Dict[int, List[Tuple[int, int]]]]:
    """Split a message into (header bytes without the ``spliced`` fields, {field: [(s, e)]})."""
    header, spans, pos = bytearray(), {f: [] for f in spliced}, start
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
                spans[field].append((pos, pos + length))
                pos += length
                continue
            pos += length
        else:
            raise ValueError(f"malformed message at '{where}': unsupported wire type {wire_type}")
        if pos > end:
            raise ValueError(f"malformed message at '{where}': field {field} runs past the end")
        header += buf[field_start:pos]
    return bytes(header), spans
