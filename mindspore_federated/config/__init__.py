"""config of mindspore_federated."""
