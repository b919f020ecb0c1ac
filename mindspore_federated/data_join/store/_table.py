"""A party's raw table in memory: rows keyed by the primary key's text."""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple


class DuplicateIdError(ValueError):
    """The primary key is not unique in the party's data."""


class RawTable:
    """Rows (tuples in schema column order) by id; ids are the primary key's value as text.

    The text form is what both parties hash, so an id read as int from MySQL matches the same id
    read from a csv file.
    """

    def __init__(self, columns: Sequence[str], primary_key: str, source: str):
        self.columns: Tuple[str, ...] = tuple(columns)
        self.primary_key = primary_key
        self.source = source
        self._rows: Dict[str, tuple] = {}
        self._duplicates: List[Tuple[str, str]] = []

    def add(self, key, row: tuple, where: str) -> None:
        text = key if isinstance(key, str) else (key.decode("utf-8") if isinstance(key, bytes) else str(key))
        if text in self._rows:
            self._duplicates.append((text, where))
            return
        self._rows[text] = row

    def check_unique(self) -> None:
        if self._duplicates:
            shown = ", ".join(f"{key!r} ({where})" for key, where in self._duplicates[:5])
            more = f" and {len(self._duplicates) - 5} more" if len(self._duplicates) > 5 else ""
            raise DuplicateIdError(f"{self.source}: primary key {self.primary_key!r} is not unique: "
                                   f"{len(self._duplicates)} duplicated id(s): {shown}{more}")

    def __len__(self) -> int:
        return len(self._rows)

    def ids(self) -> Iterable[str]:
        return self._rows.keys()

    def rows(self, ids: Iterable[str]) -> Iterable[tuple]:
        rows = self._rows
        return (rows[key] for key in ids)
