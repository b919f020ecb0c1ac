"""tools of mindspore_federated."""
