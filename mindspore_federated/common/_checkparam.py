"""``mindspore_federated.common._checkparam``: the argument checks vertical code of the original
imported (its CompressConfig used ``check_string`` / ``check_int_range`` with ``INC_BOTH``).

Each check returns the value when it passes and raises ValueError/TypeError naming the argument.
"""
from typing import Any, Iterable, Optional

INC_NEITHER = 7  # (lower, upper)
INC_LEFT = 8     # [lower, upper)
INC_RIGHT = 9    # (lower, upper]
INC_BOTH = 10    # [lower, upper]

_RANGE = {INC_NEITHER: ("(", ")", lambda v, lo, hi: lo < v < hi),
          INC_LEFT: ("[", ")", lambda v, lo, hi: lo <= v < hi),
          INC_RIGHT: ("(", "]", lambda v, lo, hi: lo < v <= hi),
          INC_BOTH: ("[", "]", lambda v, lo, hi: lo <= v <= hi)}


def _who(arg_name: Optional[str], prim_name: Optional[str]) -> str:
    name = f"'{arg_name}'" if arg_name else "the argument"
    return f"{prim_name}: {name}" if prim_name else name


def _check_range(value: Any, lower: Any, upper: Any, rel: int, kinds: tuple, kind_name: str,
                 arg_name: Optional[str], prim_name: Optional[str]) -> Any:
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError(f"{_who(arg_name, prim_name)} must be {kind_name}, got {type(value).__name__}")
    if rel not in _RANGE:
        raise ValueError(f"unknown range relation {rel!r}; use INC_NEITHER, INC_LEFT, INC_RIGHT or INC_BOTH")
    left, right, inside = _RANGE[rel]
    if not inside(value, lower, upper):
        raise ValueError(f"{_who(arg_name, prim_name)} must be in {left}{lower}, {upper}{right}, got {value}")
    return value


def check_int_range(arg_value: Any, lower_limit: int, upper_limit: int, rel: int,
                    arg_name: Optional[str] = None, prim_name: Optional[str] = None) -> int:
    return _check_range(arg_value, lower_limit, upper_limit, rel, (int,), "an int", arg_name, prim_name)


def check_float_range(arg_value: Any, lower_limit: float, upper_limit: float, rel: int,
                      arg_name: Optional[str] = None, prim_name: Optional[str] = None) -> float:
    return _check_range(arg_value, lower_limit, upper_limit, rel, (int, float), "a number", arg_name, prim_name)


def check_string(arg_value: Any, valid_values: Iterable[str], arg_name: Optional[str] = None,
                 prim_name: Optional[str] = None) -> str:
    valid = list(valid_values)
    if not isinstance(arg_value, str) or arg_value not in valid:
        raise ValueError(f"{_who(arg_name, prim_name)} must be one of {valid}, got {arg_value!r}")
    return arg_value


def check_bool(arg_value: Any, arg_name: Optional[str] = None, prim_name: Optional[str] = None) -> bool:
    if not isinstance(arg_value, bool):
        raise TypeError(f"{_who(arg_name, prim_name)} must be a bool, got {type(arg_value).__name__}")
    return arg_value


def check_positive_int(arg_value: Any, arg_name: Optional[str] = None, prim_name: Optional[str] = None) -> int:
    if isinstance(arg_value, bool) or not isinstance(arg_value, int):
        raise TypeError(f"{_who(arg_name, prim_name)} must be an int, got {type(arg_value).__name__}")
    if arg_value <= 0:
        raise ValueError(f"{_who(arg_name, prim_name)} must be > 0, got {arg_value}")
    return arg_value


def check_non_negative_int(arg_value: Any, arg_name: Optional[str] = None,
                           prim_name: Optional[str] = None) -> int:
    if isinstance(arg_value, bool) or not isinstance(arg_value, int):
        raise TypeError(f"{_who(arg_name, prim_name)} must be an int, got {type(arg_value).__name__}")
    if arg_value < 0:
        raise ValueError(f"{_who(arg_name, prim_name)} must be >= 0, got {arg_value}")
    return arg_value


__all__ = ["INC_NEITHER", "INC_LEFT", "INC_RIGHT", "INC_BOTH", "check_int_range", "check_float_range",
           "check_string", "check_bool", "check_positive_int", "check_non_negative_int"]
