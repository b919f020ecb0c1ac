"""Data join: the samples both parties hold, found by private set intersection and exported in a
shared order (see docs/data_join.md)."""
from mindspore_federated.data_join.io import load_mindrecord
from mindspore_federated.data_join.worker import FLDataWorker

__all__ = ["FLDataWorker", "load_mindrecord"]
