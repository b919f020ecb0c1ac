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
    "PartyGradOperation": "mindspore_federated.trainer.vfl_optim",
    "PartyOptimizer": "mindspore_federated.trainer.vfl_optim",
    "PartyGradScaler": "mindspore_federated.trainer.vfl_optim",
    "VerticalFederatedCommunicator": "mindspore_federated.communication.communicator",
    "ServerConfig": "mindspore_federated.communication.communicator",
    "SSLConfig": "mindspore_federated.communication.tls",
    "CompressConfig": "mindspore_federated.communication.compression",
    "FLDataWorker": "mindspore_federated.data_join.worker",
}
# modules the original exposed as attributes of the package (mindspore_federated.vfl_utils, ...)
_MODULES = {
    "vfl_utils": "mindspore_federated.common.vfl_utils",
    "tensor_utils": "mindspore_federated.common.tensor_utils",
    "privacy": "mindspore_federated.privacy",
}

__all__ = sorted(_PUBLIC) + sorted(_MODULES) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    if name in _MODULES:
        return import_module(_MODULES[name])
    raise AttributeError(f"module 'mindspore_federated' has no attribute {name!r}")


def __dir__() -> list:
    return __all__
