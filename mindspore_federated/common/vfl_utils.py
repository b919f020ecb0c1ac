"""``mindspore_federated.common.vfl_utils``: yaml loading and network helpers of the original.

``FLYamlData`` is this project's (config/yaml_data.py); the helpers are what the original's
programs import from here (its PanGu optimizer wraps each output with ``IthOutputCellInTuple``).
"""
import os
from typing import Any, List, Sequence, Tuple

import yaml
from mindspore import nn, ParameterTuple

from mindspore_federated.config.yaml_data import FLYamlData, YamlFileNotFoundError
from mindspore_federated.trainer.vfl_optim import params_by_name


def parse_yaml_file(file_path: str) -> Tuple[Any, Any]:
    """``(yaml.safe_load of the file, the closed file object)``, as the original returned."""
    path = os.path.abspath(file_path)
    if not os.path.isfile(path):
        raise YamlFileNotFoundError(f"yaml file not found: {path!r}")
    with open(path, "r", encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    return data, handle


def get_params_list_by_name(net: nn.Cell, name: str) -> List[Any]:
    """Trainable parameters of ``net`` whose name contains ``name``."""
    return params_by_name(net, [name])


def get_params_by_name(net: nn.Cell, weight_name_list: Sequence[str]) -> ParameterTuple:
    """Trainable parameters whose name contains any of ``weight_name_list``, each once."""
    return ParameterTuple(params_by_name(net, list(weight_name_list)))


class IthOutputCellInTuple(nn.Cell):
    """``network`` restricted to its ``output_index``-th output (positional inputs)."""

    def __init__(self, network: nn.Cell, output_index: int):
        super().__init__()
        self.network = network
        self.output_index = output_index

    def construct(self, *args):
        return self.network(*args)[self.output_index]


class IthOutputCellInDict(nn.Cell):
    """``network`` restricted to its ``output_index``-th output (keyword inputs)."""

    def __init__(self, network: nn.Cell, output_index: int):
        super().__init__()
        self.network = network
        self.output_index = output_index

    def construct(self, **kwargs):
        return self.network(**kwargs)[self.output_index]


__all__ = ["FLYamlData", "parse_yaml_file", "get_params_list_by_name", "get_params_by_name",
           "IthOutputCellInTuple", "IthOutputCellInDict"]
