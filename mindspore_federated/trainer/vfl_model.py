"""``mindspore_federated.trainer.vfl_model``: the original's path of FLModel."""
from mindspore_federated.trainer.fl_model import FLModel

__all__ = ["FLModel"]
