"""The data schema: which columns a party exports and their types."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict

import yaml

# schema type -> MindRecord field type
MINDRECORD_TYPES = {"int32": "int32", "int64": "int64", "float32": "float32", "float64": "float64",
                    "string": "string", "bytes": "bytes"}
_INT_RANGES = {"int32": (-2 ** 31, 2 ** 31 - 1), "int64": (-2 ** 63, 2 ** 63 - 1)}


class SchemaError(ValueError):
    """The schema file or the data does not fit the schema."""


def load_schema(path: str) -> "OrderedDict[str, str]":
    """``{column: type}`` in file order from a yaml of ``column: {type: T}`` items."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except OSError as err:
        raise SchemaError(f"data_schema_path: cannot read {path!r}: {err}") from err
    except yaml.YAMLError as err:
        raise SchemaError(f"data_schema_path: {path!r} is not valid yaml: {err}") from err
    if not isinstance(raw, dict) or not raw:
        raise SchemaError(f"data schema {path!r}: expected a non-empty mapping 'column: {{type: T}}'")
    schema = OrderedDict()
    for column, spec in raw.items():
        if not isinstance(column, str) or not column:
            raise SchemaError(f"data schema {path!r}: column names must be non-empty strings, got {column!r}")
        if not isinstance(spec, dict) or "type" not in spec:
            raise SchemaError(f"data schema {path!r}: column {column!r} needs a 'type' "
                              f"(one of {', '.join(MINDRECORD_TYPES)}), got {spec!r}")
        kind = spec["type"]
        if kind not in MINDRECORD_TYPES:
            raise SchemaError(f"data schema {path!r}: column {column!r} has type {kind!r}; "
                              f"expected one of {', '.join(MINDRECORD_TYPES)}")
        if spec.get("shape") not in (None, [1], (1,), 1):
            raise SchemaError(f"data schema {path!r}: column {column!r}: only scalar columns can be read from "
                              f"csv or mysql (got shape {spec['shape']!r})")
        schema[column] = kind
    return schema


def convert(value: Any, kind: str, column: str, where: str) -> Any:
    """One cell converted to the schema type; raises SchemaError naming the place."""
    if value is None or (isinstance(value, str) and value == "" and kind not in ("string", "bytes")):
        if kind == "string":
            return ""
        if kind == "bytes":
            return b""
        raise SchemaError(f"{where}: column {column!r} ({kind}) is empty")
    try:
        if kind in _INT_RANGES:
            number = int(value) if not isinstance(value, str) else int(value.strip())
            low, high = _INT_RANGES[kind]
            if not low <= number <= high:
                raise ValueError(f"{number} is out of the {kind} range")
            return number
        if kind in ("float32", "float64"):
            return float(value)
        if kind == "string":
            return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)
        return bytes(value) if isinstance(value, (bytes, bytearray)) else str(value).encode("utf-8")
    except (ValueError, TypeError, UnicodeDecodeError) as err:
        raise SchemaError(f"{where}: column {column!r}: {value!r} is not a valid {kind} ({err})") from None


def mindrecord_schema(schema: Dict[str, str]) -> Dict[str, Dict[str, str]]:
    return {column: {"type": MINDRECORD_TYPES[kind]} for column, kind in schema.items()}
