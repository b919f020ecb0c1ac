"""Configuration of the Wide&Deep split example: yaml_files/network_config.yaml, every scalar item
overridable on the command line (``--epochs 2``), plus the TLS options of the two-process scripts."""
import argparse
import ast
import os
from pprint import pformat

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))


class Config:
    """Attribute access to the merged configuration."""

    def __init__(self, values: dict):
        self.__dict__.update(values)

    def __repr__(self):
        return pformat(self.__dict__)


def _bool(text):
    if str(text).lower() in ("true", "1", "yes"):
        return True
    if str(text).lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def get_config(argv=None) -> Config:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config_path", default=os.path.join(HERE, "yaml_files/network_config.yaml"))
    path = pre.parse_known_args(argv)[0].config_path
    with open(path, "r", encoding="utf-8") as handle:
        values = yaml.safe_load(handle)
    parser = argparse.ArgumentParser(parents=[pre], description=f"Wide&Deep split example (defaults: {path})")
    tls = {"enable_ssl": False, "server_password": "", "client_password": "", "server_cert_path": "",
           "client_cert_path": "", "ca_cert_path": "", "crl_path": ""}
    for key, default in {**tls, **values}.items():
        if isinstance(default, bool):
            kind = _bool
        elif isinstance(default, (int, float, str)):
            kind = type(default)
        else:
            kind = ast.literal_eval
        parser.add_argument(f"--{key}", type=kind, default=default, help=f"default: {default!r}")
    config = Config(vars(parser.parse_args(argv)))
    for key in ("deep_layer_dim", "init_args"):
        if isinstance(getattr(config, key), str):
            setattr(config, key, ast.literal_eval(getattr(config, key)))
    return config
