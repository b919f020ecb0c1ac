"""communication of mindspore_federated."""
