"""``mindspore_federated.common.tensor_utils``: the original's tensor <-> message conversions.

The original converted to pybind objects of its C++ core; here the message objects are the wire
protobufs themselves (``TensorProto`` / ``TensorListProto`` of proto/vfl.proto), built by the
project's codec: raw little-endian bytes, no base64.
"""
from collections import OrderedDict
from typing import Any, Mapping, Optional, Tuple

import numpy as np

from mindspore_federated._proto.vfl_pb2 import TensorListProto, TensorProto
from mindspore_federated.communication import codec

DATATYPE_STRING_NPTYPE_DICT = {
    "float32": np.float32, "uint8": np.uint8, "int8": np.int8, "uint16": np.uint16,
    "int16": np.int16, "int32": np.int32, "int64": np.int64, "bool": np.bool_,
    "float16": np.float16, "double": np.double, "uint32": np.uint32, "uint64": np.uint64,
    "float64": np.float64,
}


def tensor_to_tensor_pybind_obj(ts: Any, ref_key: str, compress_config: Any = None) -> TensorProto:
    """One tensor as a TensorProto, compressed per ``compress_config`` (a CompressConfig)."""
    if ts is None:
        raise ValueError("tensor_to_tensor_pybind_obj: the tensor is None")
    message = codec.encode({ref_key: ts}, "", {ref_key: compress_config} if compress_config else None)
    return message.tensors[0]


def tensor_dict_to_tensor_list_pybind_obj(ts_dict: Mapping, name: str,
                                          compress_configs: Optional[Mapping] = None) -> TensorListProto:
    """A (nested) dict of tensors as a TensorListProto named ``name``."""
    return codec.encode(ts_dict, name, compress_configs or None)


def tensor_pybind_obj_to_tensor(tensor_item: TensorProto) -> Tuple[str, Any]:
    """``(ref_key, mindspore.Tensor)`` of a TensorProto (validated, decompressed)."""
    return tensor_item.ref_key, codec.decode_tensor(tensor_item)


def tensor_list_pybind_obj_to_tensor_dict(tensor_list_item: TensorListProto) -> Tuple[str, "OrderedDict[str, Any]"]:
    """``(name, OrderedDict)`` of a TensorListProto, nesting and order preserved."""
    return tensor_list_item.name, codec.decode(tensor_list_item)


__all__ = ["DATATYPE_STRING_NPTYPE_DICT", "tensor_to_tensor_pybind_obj",
           "tensor_dict_to_tensor_list_pybind_obj", "tensor_pybind_obj_to_tensor",
           "tensor_list_pybind_obj_to_tensor_dict"]
