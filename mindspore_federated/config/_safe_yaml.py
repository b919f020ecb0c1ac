"""Loading a party's yaml without surprises: what ``yaml.safe_load`` lets through, refused by name.

``yaml.safe_load`` builds no objects, but it silently keeps the last of two equal keys (a pasted
``role:`` overrides the first), recurses once per nesting level (10 000 brackets end in a bare
RecursionError), expands aliases without bound for whoever walks the result, and reports a file
that is not UTF-8 without naming it. Every such case is a ``ValueError`` here that names the file,
and the line where it applies.
"""
from __future__ import annotations

import os
from typing import Any, Union

import yaml

MAX_DEPTH = 100          # nesting levels of mappings/sequences; party yamls use fewer than 10
MAX_ALIASES = 1000       # alias (*ref) uses per file
MAX_FILE_BYTES = 16 << 20


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, deep nesting and alias floods."""

    def __init__(self, stream, name: str):
        super().__init__(stream)
        self.name = name
        self._depth = 0
        self._aliases = 0

    def _fail(self, node_or_mark, message: str):
        mark = getattr(node_or_mark, "start_mark", node_or_mark)
        raise ValueError(f"{self.name}: line {mark.line + 1}: {message}")

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                self._fail(self.peek_event(), f"more than {MAX_ALIASES} aliases (*ref)")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                self._fail(self.peek_event(), f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # '<<: *base' is allowed to override, that is its purpose
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # unhashable keys: the constructor below reports them
                if first is not key_node:
                    self._fail(key_node, f"duplicate key {key!r} (first at line {first.start_mark.line + 1})")
        return super().construct_mapping(node, deep)


def load_yaml_file(path: Union[str, os.PathLike]) -> Any:
    """Parse the yaml file at ``path`` (UTF-8, optional BOM); ValueError naming the file otherwise."""
    name = os.fspath(path)
    with open(name, "rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"{name}: larger than {MAX_FILE_BYTES} bytes; not a party description")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ValueError(f"{name}: not UTF-8 text (byte 0x{data[err.start]:02x} at line {line}); save the "
                         f"file as UTF-8") from None
    loader = _StrictLoader(text, name)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        raise ValueError(f"{name}: not valid yaml: {err}") from err
    finally:
        loader.dispose()
