"""The committed protobuf bindings must describe exactly proto/vfl.proto."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "mindspore_federated" / "_proto" / "vfl_pb2.py"


def _serialized_descriptor(source: str) -> bytes:
    match = re.search(r"AddSerializedFile\((b'.*?')\)", source, re.S)
    assert match, "no serialized descriptor in generated code"
    return eval(match.group(1))  # a bytes literal written by protoc  # noqa: S307


def test_generated_bindings_match_the_proto_file(tmp_path):
    pytest.importorskip("grpc_tools")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}",
                    f"--python_out={tmp_path}", str(ROOT / "proto" / "vfl.proto")], check=True)
    fresh = (tmp_path / "vfl_pb2.py").read_text()
    assert _serialized_descriptor(fresh) == _serialized_descriptor(COMMITTED.read_text()), (
        "mindspore_federated/_proto/vfl_pb2.py is stale: regenerate it with "
        "python -m grpc_tools.protoc -Iproto --python_out=mindspore_federated/_proto proto/vfl.proto")
