"""The MySQL store against a real MariaDB server (started by the session fixture)."""
from __future__ import annotations

import pytest

from tests.data_join.conftest import base_config, run_pair


def _create_table(db, name, rows):
    import pymysql

    connection = pymysql.connect(host=db.host, port=db.port, user=db.user, password=db.password,
                                 database=db.database)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {name}")
        cursor.execute(f"CREATE TABLE {name} (oaid VARCHAR(64) PRIMARY KEY, f1 DOUBLE, f2 INT, note TEXT, "
                       f"price DECIMAL(10,2))")
        cursor.executemany(f"INSERT INTO {name} VALUES (%s, %s, %s, %s, %s)", rows)
    connection.commit()
    connection.close()


def _mysql_config(db, table):
    return dict(store_type="mysql", mysql_host=db.host, mysql_port=db.port, mysql_user=db.user,
                mysql_password=db.password, mysql_database=db.database, mysql_charset="utf8mb4",
                mysql_table_name=table)


def test_mysql_table_types_and_errors(mariadb):
    from mindspore_federated.data_join.store import load_table
    from mindspore_federated.data_join.store.csv_store import MissingColumnError
    from mindspore_federated.data_join.store._table import DuplicateIdError

    _create_table(mariadb, "t_types", [("a", 1.5, 7, "x", "2.25"), ("b", -2.0, 8, None, "3.00")])
    schema = {"oaid": "string", "f1": "float32", "f2": "int64", "note": "string", "price": "float64"}
    table = load_table("mysql", _mysql_config(mariadb, "t_types"), schema, "oaid")
    assert sorted(table.ids()) == ["a", "b"]
    assert list(table.rows(["a", "b"])) == [("a", 1.5, 7, "x", 2.25), ("b", -2.0, 8, "", 3.0)]

    with pytest.raises(MissingColumnError, match=r"mysql table 't_types': column\(s\) \['missing'\] missing"):
        load_table("mysql", _mysql_config(mariadb, "t_types"), {"oaid": "string", "missing": "int32"}, "oaid")
    with pytest.raises(DuplicateIdError, match=r"mysql table 't_dup'.*not unique: 1 duplicated id\(s\): '7'"):
        _duplicate(mariadb, load_table)
    with pytest.raises(ValueError, match=r"mysql_table_name: 't; DROP TABLE x' is not a plain MySQL identifier"):
        load_table("mysql", _mysql_config(mariadb, "t; DROP TABLE x"), schema, "oaid")
    with pytest.raises(ConnectionError, match=r"cannot connect to MySQL at 127.0.0.1:\d+ as 'fl'.*Access denied"):
        load_table("mysql", dict(_mysql_config(mariadb, "t_types"), mysql_password="wrong"), schema, "oaid")


def _duplicate(db, load_table):
    import pymysql

    connection = pymysql.connect(host=db.host, port=db.port, user=db.user, password=db.password, database=db.database)
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS t_dup")
        cursor.execute("CREATE TABLE t_dup (oaid INT, v INT)")
        cursor.executemany("INSERT INTO t_dup VALUES (%s, %s)", [(7, 1), (8, 2), (7, 3)])
    connection.commit()
    connection.close()
    load_table("mysql", _mysql_config(db, "t_dup"), {"v": "int32"}, "oaid")


def test_join_between_a_mysql_party_and_a_csv_party(mariadb, tmp_path, ports):
    """Leader reads MariaDB (integer-looking string ids), follower reads csv: same intersection."""
    from tests.data_join.conftest import write_schema, write_table

    leader_rows = [(f"{i}", i * 0.25, i, f"n{i}", "1.00") for i in range(0, 80)]
    _create_table(mariadb, "leader_data", leader_rows)
    follower_ids = [str(i) for i in range(40, 120)]
    write_table(tmp_path / "f.csv", "oaid", follower_ids, {"z": [int(i) * 10 for i in follower_ids]})
    lead = base_config(tmp_path, "leader", ports, data_schema_path=write_schema(
        tmp_path / "ls.yaml", {"oaid": "string", "f1": "float64", "note": "string"}),
        **_mysql_config(mariadb, "leader_data"))
    foll = base_config(tmp_path, "follower", ports, main_table_files=str(tmp_path / "f.csv"),
                       data_schema_path=write_schema(tmp_path / "fs.yaml", {"oaid": "string", "z": "int64"}))
    results = run_pair(lead, foll)
    assert results["leader"][1] is None and results["follower"][1] is None, results

    from mindspore_federated.data_join import load_mindrecord

    def read(folder):
        dataset = load_mindrecord(folder, seed=1)
        return list(dataset.create_dict_iterator(output_numpy=True, num_epochs=1))

    leader, follower = read(lead["output_dir"]), read(foll["output_dir"])
    ids = [str(r["oaid"].item()) for r in leader]
    assert sorted(ids, key=int) == [str(i) for i in range(40, 80)]
    assert ids == [str(r["oaid"].item()) for r in follower]
    assert all(float(r["f1"]) == int(i) * 0.25 and str(r["note"].item()) == f"n{i}" for r, i in zip(leader, ids))
    assert all(int(r["z"]) == int(i) * 10 for r, i in zip(follower, ids))
