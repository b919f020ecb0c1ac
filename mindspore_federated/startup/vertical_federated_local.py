"""``mindspore_federated.startup.vertical_federated_local``: the original's path of the communicator."""
from mindspore_federated.communication.communicator import ServerConfig, VerticalFederatedCommunicator

__all__ = ["VerticalFederatedCommunicator", "ServerConfig"]
