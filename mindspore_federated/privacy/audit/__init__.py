"""Privacy audit: what can the party that receives activations learn about the sender's tokens?

Record what the receiver really gets (`ReceivedTensorRecorder`, at its end of the channel), then
attack it the way a curious receiver would: group the vectors into token classes
(`link_activations`: position offsets, tracking across steps; a variant for EmbeddingDP's 1-bit
codes) and name the classes with public text (`name_by_frequency`, `refine_with_bigrams`).
`audit_received` runs it all and scores it against the true tokens next to the chance level.
Threat model and limits: docs/privacy_audit.md.
"""
from mindspore_federated.privacy.audit.metrics import (adjusted_rand_index, chance_recovery, purity,
                                                       token_recovery)
from mindspore_federated.privacy.audit.naming import (ReferenceModel, apply_names, name_by_frequency,
                                                      refine_with_bigrams)
from mindspore_federated.privacy.audit.recorder import ReceivedTensorRecorder
from mindspore_federated.privacy.audit.report import ATTACK_GRID, audit_received
from mindspore_federated.privacy.audit.structure import link_activations, positions_from_mask, typical_distance

__all__ = ["ReceivedTensorRecorder", "positions_from_mask", "typical_distance", "link_activations",
           "ReferenceModel", "name_by_frequency", "refine_with_bigrams", "apply_names", "adjusted_rand_index",
           "purity", "token_recovery", "chance_recovery", "audit_received", "ATTACK_GRID"]
