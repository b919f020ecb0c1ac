"""The party yaml loader refuses what yaml.safe_load lets through silently, naming file and line."""
import glob
import os
import time

import pytest
import yaml

from mindspore_federated import FLYamlData
from mindspore_federated.config._safe_yaml import load_yaml_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write(tmp_path, content, name="party.yaml"):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def test_duplicate_key_names_the_key_and_both_lines(tmp_path):
    """Before: the second 'role' silently won."""
    path = _write(tmp_path, "role: leader\nmodel:\n  train_net:\n    name: a\nrole: follower\n")
    with pytest.raises(ValueError, match=rf"{path}: line 5: duplicate key 'role' \(first at line 1\)"):
        FLYamlData(path)
    nested = _write(tmp_path, "opts:\n  - type: Adam\n    grads: []\n    type: SGD\n", "nested.yaml")
    with pytest.raises(ValueError, match=r"line 4: duplicate key 'type' \(first at line 2\)"):
        load_yaml_file(nested)


def test_ten_thousand_nested_brackets_is_a_clear_value_error(tmp_path):
    """Before: RecursionError from deep inside PyYAML."""
    path = _write(tmp_path, "role: " + "[" * 10_000 + "]" * 10_000 + "\n")
    start = time.monotonic()
    with pytest.raises(ValueError, match=rf"{path}: line 1: nested deeper than 100 levels"):
        FLYamlData(path)
    assert time.monotonic() - start < 5


def test_alias_flood_is_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 120)]
    with pytest.raises(ValueError, match="more than 1000 aliases"):
        load_yaml_file(_write(tmp_path, "\n".join(lines) + "\n"))


def test_non_utf8_file_names_the_file(tmp_path):
    """Before: a bare UnicodeDecodeError without the file name."""
    path = _write(tmp_path, "role: leader\nname: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{path}: not UTF-8 text \(byte 0xe9 at line 2\)"):
        FLYamlData(path)


def test_valid_yamls_load_exactly_as_with_safe_load(tmp_path):
    """Merge keys, BOMs and every yaml shipped with the project (and the original's) still load."""
    merged = _write(tmp_path, "\ufeffbase: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n")
    assert load_yaml_file(merged) == {"base": {"x": 1, "y": 2}, "derived": {"x": 1, "y": 3}}
    files = glob.glob(os.path.join(ROOT, "example", "**", "*.yaml"), recursive=True)
    files += glob.glob("/work/orig/example/**/*.yaml", recursive=True)
    assert files
    for file in files:
        with open(file, encoding="utf-8") as handle:
            try:
                expected = yaml.safe_load(handle)
            except yaml.YAMLError:  # e.g. multi-document configs of other examples: refused by both
                with pytest.raises(ValueError, match="not valid yaml"):
                    load_yaml_file(file)
                continue
        assert load_yaml_file(file) == expected, file
