"""Command-line configuration from a yaml of ``{def_val, help, choices}`` items.

Each top-level key of the yaml becomes a ``--key`` option whose default is ``def_val``; the
option's type follows the default's type (booleans are written ``True``/``False``). This is the
format of the original MindSpore Federated's data-join configuration files.
"""
from __future__ import annotations

import argparse
import ast
import logging
from typing import Any, Dict, List, Optional, Tuple

import yaml

logger = logging.getLogger(__name__)

_ITEM_KEYS = {"def_val", "help", "choices"}


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def _parse_literal(text: str) -> Any:
    """Lists, dicts and None given on the command line (``--main_table_files "['a.csv','b.csv']"``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_yaml(yaml_path: str) -> Tuple[Dict[str, Any], Dict[str, str], Dict[str, List]]:
    """Defaults, help texts and choices of a ``{def_val, help, choices}`` yaml, in file order."""
    try:
        with open(yaml_path, "r", encoding="utf-8") as handle:
            items = yaml.safe_load(handle)
    except OSError as err:
        raise ValueError(f"cannot read config file {yaml_path!r}: {err}") from err
    except yaml.YAMLError as err:
        raise ValueError(f"config file {yaml_path!r} is not valid yaml: {err}") from err
    if not isinstance(items, dict):
        raise ValueError(f"config file {yaml_path!r}: expected a mapping of items, got {type(items).__name__}")
    defaults, helps, choices = {}, {}, {}
    for key, item in items.items():
        if not isinstance(item, dict):
            raise ValueError(f"{yaml_path}: item {key!r} must be a mapping with def_val, help and optional "
                             f"choices, got {item!r}")
        unknown = set(item) - _ITEM_KEYS
        if unknown:
            logger.warning("%s: item %r has unknown fields %s (expected def_val, help, choices)",
                           yaml_path, key, sorted(unknown))
        if "def_val" in item:
            defaults[key] = item["def_val"]
        if "help" in item:
            helps[key] = str(item["help"])
        if "choices" in item:
            choices[key] = item["choices"]
    return defaults, helps, choices


def _option_type(default: Any):
    if isinstance(default, bool):
        return _parse_bool
    if isinstance(default, (int, float)):
        return type(default)
    if default is None or isinstance(default, (list, dict)):
        return _parse_literal
    return str


def get_config(cfg_file: str, args: Optional[List[str]] = None) -> argparse.Namespace:
    """Read ``cfg_file`` and apply ``--key value`` overrides from ``args`` (default: ``sys.argv``).

    Returns the namespace; ``get_config(path).__dict__`` is the dict ``FLDataWorker`` takes.
    """
    defaults, helps, choices = parse_yaml(cfg_file)
    parser = argparse.ArgumentParser(description=f"options of {cfg_file} (each defaults to its def_val)")
    for key, default in defaults.items():
        parser.add_argument(f"--{key}", type=_option_type(default), default=default, choices=choices.get(key),
                            help=helps.get(key, f"see {cfg_file}"))
    namespace = parser.parse_args(args)
    for key, value in vars(namespace).items():
        logger.info("[%s] %s", key, "******" if "password" in key else value)
    return namespace


__all__ = ["get_config", "parse_yaml"]
