"""Differential privacy of what crosses the party boundary (SPEC §2.6).

``LabelDP`` randomises the labels a party holds before they reach the loss; ``EmbeddingDP``
replaces the activations a party sends by randomised 1-bit codes. ``check_compatible`` refuses
configurations where a compressor would be applied to EmbeddingDP output in a way that makes no
sense.
"""
from mindspore_federated.privacy.embedding_dp import EmbeddingDP, check_compatible
from mindspore_federated.privacy.label_dp import LabelDP

__all__ = ["LabelDP", "EmbeddingDP", "check_compatible"]
