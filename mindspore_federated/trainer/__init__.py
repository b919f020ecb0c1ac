"""trainer of mindspore_federated."""
