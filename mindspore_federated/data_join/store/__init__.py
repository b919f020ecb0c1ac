"""Where a party's raw table comes from: csv files (default) or a MySQL/MariaDB table."""
from __future__ import annotations

from typing import Dict

from mindspore_federated.data_join.store._table import RawTable

STORE_TYPES = ("csv", "mysql")


def load_table(store_type: str, config: Dict, schema: Dict[str, str], primary_key: str) -> RawTable:
    """The party's rows (only the schema's columns), keyed by ``primary_key``."""
    if store_type == "csv":
        from mindspore_federated.data_join.store.csv_store import load_csv
        return load_csv(config.get("main_table_files"), schema, primary_key)
    if store_type == "mysql":
        from mindspore_federated.data_join.store.mysql_store import load_mysql
        return load_mysql(config, schema, primary_key)
    raise ValueError(f"store_type: {store_type!r} is not supported (expected one of {', '.join(STORE_TYPES)})")


__all__ = ["RawTable", "STORE_TYPES", "load_table"]
