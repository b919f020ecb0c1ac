"""``mindspore_federated.startup.compress_config``: the original's path of CompressConfig.

``NO_COMPRESS_TYPE`` is the ``compress_type`` a yaml item may name for "send as is".
"""
from mindspore_federated.communication.compression import COMPRESS_TYPES, CompressConfig
from mindspore_federated.config.yaml_data import NO_COMPRESS as NO_COMPRESS_TYPE

__all__ = ["CompressConfig", "COMPRESS_TYPES", "NO_COMPRESS_TYPE"]
