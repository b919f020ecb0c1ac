"""Split learning (vertical federated learning) on MindSpore.

Public names are imported lazily so that ``import mindspore_federated`` stays cheap and a
party that only needs the communicator does not pay for the trainer's imports.
"""
import os
from importlib import import_module
from typing import Any

# MindSpore's import switches protobuf to its pure-Python backend (to load huge checkpoints).
# Choose the native backend when we are imported first: message headers parse faster with it.
# (Tensor payloads bypass protobuf's parser either way, see communication/codec.py.)
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "upb")
from google.protobuf.internal import api_implementation as _pb_impl  # noqa: E402,F401

__version__ = "0.1.0"

_PUBLIC = {
    "FLYamlData": "mindspore_federated.config.yaml_data",
    "FLModel": "mindspore_federated.trainer.fl_model",
    "VerticalFederatedCommunicator": "mindspore_federated.communication.communicator",
    "ServerConfig": "mindspore_federated.communication.communicator",
    "SSLConfig": "mindspore_federated.communication.tls",
    "CompressConfig": "mindspore_federated.communication.compression",
    "FLDataWorker": "mindspore_federated.data_join.worker",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mindspore_federated' has no attribute {name!r}")


def __dir__() -> list:
    return __all__
