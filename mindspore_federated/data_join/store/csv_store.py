"""Read the raw table from csv files (one header line; extra columns are ignored)."""
from __future__ import annotations

import ast
import csv
import logging
import os
from typing import Dict, List, Union

from mindspore_federated.data_join._schema import SchemaError, convert
from mindspore_federated.data_join.store._table import RawTable

logger = logging.getLogger(__name__)


class MissingColumnError(SchemaError):
    """A column the schema (or the primary key) needs is not in the data."""


def csv_files(main_table_files: Union[str, List[str], None]) -> List[str]:
    """The files named by ``main_table_files``: one file, a list of files, or a folder (its files, sorted)."""
    if main_table_files is None or main_table_files == "" or main_table_files == []:
        raise ValueError("main_table_files: no input given (a csv file, a list of files or a folder)")
    if isinstance(main_table_files, str) and main_table_files.lstrip().startswith("["):
        try:  # a list given on the command line
            main_table_files = ast.literal_eval(main_table_files)
        except (ValueError, SyntaxError):
            raise ValueError(f"main_table_files: {main_table_files!r} is not a list of paths") from None
    if isinstance(main_table_files, (list, tuple)):
        files = [str(path) for path in main_table_files]
    elif isinstance(main_table_files, str):
        if os.path.isdir(main_table_files):
            files = sorted(os.path.join(main_table_files, name) for name in os.listdir(main_table_files)
                           if not name.startswith("."))
            if not files:
                raise ValueError(f"main_table_files: folder {main_table_files!r} holds no file")
        else:
            files = [main_table_files]
    else:
        raise TypeError(f"main_table_files must be a path or a list of paths, got {type(main_table_files).__name__}")
    for path in files:
        if not os.path.isfile(path):
            raise ValueError(f"main_table_files: {path!r} is not a file")
    return files


def load_csv(main_table_files, schema: Dict[str, str], primary_key: str) -> RawTable:
    files = csv_files(main_table_files)
    table = RawTable(schema, primary_key, source=f"csv {files[0]}" + (f" (+{len(files) - 1} files)"
                                                                         if len(files) > 1 else ""))
    columns = list(schema)
    for path in files:
        with open(path, "r", encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise SchemaError(f"{path}: empty file (expected a header line)")
            header = [name.strip() for name in header]
            missing = [name for name in dict.fromkeys([primary_key] + columns) if name not in header]
            if missing:
                raise MissingColumnError(
                    f"{path}: column(s) {missing} missing from the header (header: {header})"
                    + (f"; {primary_key!r} is the primary key" if primary_key in missing else ""))
            key_at = header.index(primary_key)
            picks = [(header.index(name), name, schema[name]) for name in columns]
            width = len(header)
            for line_no, cells in enumerate(reader, start=2):
                if not cells:
                    continue
                if len(cells) != width:
                    raise SchemaError(f"{path}:{line_no}: {len(cells)} cells, the header has {width}")
                where = f"{path}:{line_no}"
                row = tuple(convert(cells[at], kind, name, where) for at, name, kind in picks)
                table.add(cells[key_at], row, where)
        logger.info("read %s: %d rows so far", path, len(table))
    table.check_unique()
    return table
