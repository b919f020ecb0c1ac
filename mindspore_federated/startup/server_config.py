"""``mindspore_federated.startup.server_config``: the original's path of ServerConfig."""
from mindspore_federated.communication.communicator import ServerConfig

__all__ = ["ServerConfig"]
