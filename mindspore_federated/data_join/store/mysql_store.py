"""Read the raw table from a MySQL / MariaDB table through PyMySQL (streamed, not buffered)."""
from __future__ import annotations

import logging
import re
from typing import Dict

from mindspore_federated.data_join._schema import convert
from mindspore_federated.data_join.store._table import RawTable
from mindspore_federated.data_join.store.csv_store import MissingColumnError

logger = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"^[A-Za-z0-9_$]{1,64}$")


def _quoted(name: str, what: str) -> str:
    # Identifiers cannot be bound as query parameters: accept only plain names, then quote them.
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"{what}: {name!r} is not a plain MySQL identifier ([A-Za-z0-9_$], 1-64 characters)")
    return f"`{name}`"


def _connect(config: Dict):
    import pymysql

    host, port = config.get("mysql_host") or "127.0.0.1", int(config.get("mysql_port") or 3306)
    kwargs = dict(host=host, port=port, user=config.get("mysql_user"), password=config.get("mysql_password") or "",
                  database=config.get("mysql_database") or None, charset=config.get("mysql_charset") or "utf8mb4",
                  connect_timeout=int(config.get("mysql_connect_timeout") or 10))
    if config.get("mysql_unix_socket"):
        kwargs["unix_socket"] = config["mysql_unix_socket"]
    try:
        return pymysql.connect(**kwargs)
    except pymysql.err.MySQLError as err:
        place = kwargs.get("unix_socket") or f"{host}:{port}"
        raise ConnectionError(f"cannot connect to MySQL at {place} as {kwargs['user']!r} "
                              f"(database {kwargs['database']!r}): {err}") from err


def load_mysql(config: Dict, schema: Dict[str, str], primary_key: str) -> RawTable:
    import pymysql
    import pymysql.cursors

    table_name = config.get("mysql_table_name")
    table_sql = _quoted(table_name, "mysql_table_name")
    columns = list(schema)
    connection = _connect(config)
    table = RawTable(schema, primary_key, source=f"mysql table {table_name!r}")
    try:
        with connection.cursor() as cursor:
            try:
                cursor.execute(f"SELECT * FROM {table_sql} LIMIT 0")
            except pymysql.err.MySQLError as err:
                raise ValueError(f"mysql_table_name: cannot read table {table_name!r}: {err}") from err
            present = [entry[0] for entry in cursor.description]
        missing = [name for name in dict.fromkeys([primary_key] + columns) if name not in present]
        if missing:
            raise MissingColumnError(f"mysql table {table_name!r}: column(s) {missing} missing (table columns: "
                                     f"{present})" + (f"; {primary_key!r} is the primary key"
                                                      if primary_key in missing else ""))
        select = ", ".join([_quoted(primary_key, "primary_key")] + [_quoted(c, "schema column") for c in columns])
        with connection.cursor(pymysql.cursors.SSCursor) as cursor:
            cursor.execute(f"SELECT {select} FROM {table_sql}")
            for number, record in enumerate(cursor, start=1):
                where = f"mysql table {table_name!r} row {number}"
                row = tuple(convert(value, schema[name], name, where) for name, value in zip(columns, record[1:]))
                table.add(record[0], row, where)
    finally:
        connection.close()
    logger.info("read mysql table %r: %d rows", table_name, len(table))
    table.check_unique()
    return table
