"""get_config: yaml of {def_val, help, choices} items, each overridable on the command line."""
from __future__ import annotations

import pytest

from mindspore_federated.common.config import get_config

YAML = """
role: {def_val: leader, help: "the role", choices: [leader, follower]}
bucket_num: {def_val: 5, help: buckets}
peer_timeout: {def_val: 60.0, help: seconds}
enable_ssl: {def_val: False, help: tls, choices: [True, False]}
main_table_files: {def_val: "vfl/input/leader/", help: files}
crl_path: {def_val: "", help: crl}
nothing: {def_val: null, help: unset}
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(YAML)
    return str(path)


def test_defaults_and_types(config_file):
    args = get_config(config_file, [])
    assert args.__dict__ == {"role": "leader", "bucket_num": 5, "peer_timeout": 60.0, "enable_ssl": False,
                             "main_table_files": "vfl/input/leader/", "crl_path": "", "nothing": None}


def test_every_key_can_be_overridden(config_file):
    args = get_config(config_file, ["--role", "follower", "--bucket_num", "9", "--peer_timeout", "2.5",
                                    "--enable_ssl", "True", "--main_table_files", "a.csv", "--crl_path", "c.pem",
                                    "--nothing", "[1, 2]"])
    assert (args.role, args.bucket_num, args.peer_timeout, args.enable_ssl, args.main_table_files, args.crl_path,
            args.nothing) == ("follower", 9, 2.5, True, "a.csv", "c.pem", [1, 2])


def test_bad_values_are_refused(config_file, capsys):
    for argv in (["--role", "boss"], ["--bucket_num", "many"], ["--enable_ssl", "maybe"], ["--unknown", "1"]):
        with pytest.raises(SystemExit):
            get_config(config_file, argv)
    assert "invalid choice: 'boss'" in capsys.readouterr().err


def test_items_must_be_mappings(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("role: leader\n")
    with pytest.raises(ValueError, match=r"item 'role' must be a mapping with def_val, help"):
        get_config(str(path), [])
    with pytest.raises(ValueError, match=r"cannot read config file"):
        get_config(str(tmp_path / "missing.yaml"), [])


def test_the_original_example_config_loads():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "example/splitnn_criteo/yaml_files/data_join_config.yaml"
    args = get_config(str(path), ["--role", "follower"])
    assert args.role == "follower" and args.join_type == "psi" and args.enable_ssl is False
