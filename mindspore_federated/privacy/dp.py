"""``mindspore_federated.privacy.dp``: the original's path of the DP mechanisms."""
from mindspore_federated.privacy.embedding_dp import EmbeddingDP
from mindspore_federated.privacy.label_dp import LabelDP

__all__ = ["LabelDP", "EmbeddingDP"]
