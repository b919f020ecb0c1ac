"""Loading and validation of one party's split-learning yaml description.

Everything the original MindSpore Federated would only fail on later is checked up front, so a
bad yaml fails before any network is built or any message is sent, with an error that names the
offending field by its path. What the original tolerates (unknown keys) is a warning.

Each parsed item is a dict holding the item's yaml (``item['name']``, as the original exposed
it) with typed attributes beside it (``item.name``), so programs written for the original and
this project's own code read the same objects.
"""
import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union


logger = logging.getLogger(__name__)

ROLES = ("leader", "follower")
SOURCES = ("local", "remote")
DESTINATIONS = ("local", "remote")
COMPRESS_TYPES = ("min_max", "bit_pack", "fp16", "bf16")
NO_COMPRESS = "no_compress"  # the original's explicit "no compression"
# compress types whose payload size is controlled by bit_num
_BIT_COMPRESS_TYPES = ("min_max", "bit_pack")
DEFAULT_BIT_NUM = 8
PRIVACY_SCHEMES = ("label_dp", "embedding_dp")
DEFAULT_CKPT_PATH = "./checkpoints"

TOP_LEVEL_KEYS = ("role", "model", "opts", "grad_scalers", "dataset", "hyper_parameters",
                  "privacy", "ckpt_path")
_MODEL_KEYS = ("train_net", "eval_net")
_NET_KEYS = ("name", "inputs", "outputs")
_EVAL_NET_KEYS = ("name", "inputs", "outputs", "gt")
_INPUT_KEYS = ("name", "source", "compress_type", "bit_num")
_OUTPUT_KEYS = ("name", "destination", "compress_type", "bit_num")
_OPT_KEYS = ("type", "grads", "params", "hyper_parameters")
_GRAD_KEYS = ("inputs", "output", "sens", "params")
_SCALER_KEYS = ("inputs", "output", "sens")
_HYPER_KEYS = ("epochs", "batch_size", "is_eval")
_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

Sens = Union[None, float, str]


class _YamlView(dict):
    """The item's yaml mapping (the original's dict access), typed fields as attributes."""

    def _fill(self, raw: Mapping[str, Any]) -> "_YamlView":
        self.update(raw)
        return self


@dataclass
class TensorItem(_YamlView):
    """One named tensor of a net: an input (``source`` set) or an output (``destination`` set)."""
    name: str
    source: Optional[str] = None
    destination: Optional[str] = None
    compress_type: Optional[str] = None
    bit_num: Optional[int] = None


@dataclass
class NetSpec(_YamlView):
    """``model.train_net`` or ``model.eval_net``."""
    name: str
    inputs: List[TensorItem]
    outputs: List[TensorItem]
    gt: Optional[str] = None

    @property
    def input_names(self) -> List[str]:
        return [item.name for item in self.inputs]

    @property
    def output_names(self) -> List[str]:
        return [item.name for item in self.outputs]


@dataclass
class GradSpec(_YamlView):
    """One gradient term (``opts[i].grads[j]``) or one grad scaler (``grad_scalers[k]``).

    ``sens`` is None (plain gradient), a float (constant sensitivity) or a str (tag of the
    ``sens`` dict received from the peer). ``params`` (optimizer terms only) restricts the
    parameters this term contributes to; empty means all parameters of the optimizer.
    """
    inputs: List[str]
    output: str
    sens: Sens = None
    params: List[str] = field(default_factory=list)
    path: str = ""


@dataclass
class OptSpec(_YamlView):
    """One ``opts`` entry: an optimizer and the gradient terms it applies."""
    type: str
    grads: List[GradSpec]
    params: List[str] = field(default_factory=list)
    hyper_parameters: Dict[str, Any] = field(default_factory=dict)
    path: str = ""


class YamlFileNotFoundError(FileNotFoundError, ValueError):
    """The yaml file does not exist (a ValueError too, as the original raised)."""


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class FLYamlData:
    """Parsed and validated description of one party (see ``docs/yaml_reference.md``).

    ``FLYamlData(yaml_path)`` reads the file with ``yaml.safe_load``; the raw dict is kept as
    ``yaml_data``. Value problems raise ``ValueError``, type problems ``TypeError``, a missing
    file ``FileNotFoundError`` (also a ``ValueError``); every message starts with the path of the
    offending field. Unknown keys are ignored with a warning naming them (the original ignored
    them silently), except inside ``dataset`` and ``opts[].hyper_parameters``, which are free-form.

    The original's attributes are all here: ``train_net`` / ``eval_net`` / ``opts`` /
    ``grad_scalers`` read as dicts and lists (``yaml_data.opts[0]['grads']``), besides typed
    attributes (``yaml_data.opts[0].grads``); ``label_dp_eps`` / ``embedding_dp_eps`` exist only
    when the yaml has the scheme, as in the original (its programs test them with ``hasattr``).
    """

    def __init__(self, yaml_path: Union[str, os.PathLike]) -> None:
        path = os.fspath(yaml_path)
        if not os.path.isfile(path):
            raise YamlFileNotFoundError(f"yaml file not found: {path!r}")
        from mindspore_federated.config._safe_yaml import load_yaml_file
        raw = load_yaml_file(path)  # safe_load, plus: duplicate keys, depth, encoding named
        self.yaml_path: Optional[str] = path
        self._parse(raw)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FLYamlData":
        """Build from an already loaded dict (tests, programmatic configs); same validation."""
        obj = cls.__new__(cls)
        obj.yaml_path = None
        obj._parse(data)
        return obj

    # ------------------------------------------------------------------ parsing
    def _parse(self, raw: Any) -> None:
        if not isinstance(raw, Mapping):
            raise TypeError(f"<root>: expected a mapping of top-level keys, got {_type_name(raw)}")
        self.yaml_data: Dict[str, Any] = dict(raw)
        for key in ("role", "model", "opts"):
            if key not in raw:
                raise ValueError(f"{key}: required key is missing")
        _check_keys(raw, TOP_LEVEL_KEYS, "<root>")

        role = raw["role"]
        if not isinstance(role, str):
            raise TypeError(f"role: expected a string ({' or '.join(ROLES)}), got {_type_name(role)}")
        if role not in ROLES:
            raise ValueError(f"role: {role!r} is not one of {', '.join(ROLES)}")
        self.role: str = role

        model = _mapping(raw["model"], "model")
        _check_keys(model, _MODEL_KEYS, "model")
        for key in _MODEL_KEYS:
            if key not in model:
                raise ValueError(f"model.{key}: required key is missing")
        self.model_data: Dict[str, Any] = model
        self.train_net: NetSpec = _parse_net(model["train_net"], "model.train_net", _NET_KEYS)
        self.eval_net: NetSpec = _parse_net(model["eval_net"], "model.eval_net", _EVAL_NET_KEYS)

        train_inputs = self.train_net.input_names
        train_outputs = self.train_net.output_names
        opts = raw["opts"]
        if not isinstance(opts, list):
            raise TypeError(f"opts: expected a list of optimizers, got {_type_name(opts)}")
        self.opts: List[OptSpec] = [_parse_opt(item, f"opts[{i}]", train_inputs, train_outputs)
                                    for i, item in enumerate(opts)]

        scalers = raw.get("grad_scalers")
        if scalers is None:
            scalers = []
        if not isinstance(scalers, list):
            raise TypeError(f"grad_scalers: expected a list, got {_type_name(scalers)}")
        self.grad_scalers: List[GradSpec] = [
            _parse_grad(item, f"grad_scalers[{i}]", train_inputs, train_outputs, _SCALER_KEYS)
            for i, item in enumerate(scalers)]
        seen: Dict[str, int] = {}
        for i, scaler in enumerate(self.grad_scalers):
            if scaler.output in seen:
                raise ValueError(
                    f"grad_scalers[{i}].output.name: {scaler.output!r} is already the output of "
                    f"grad_scalers[{seen[scaler.output]}]; each scaler's result is keyed by its "
                    f"output name, so they must be distinct")
            seen[scaler.output] = i

        dataset = raw.get("dataset")
        self.dataset: Dict[str, Any] = {} if dataset is None else dict(_mapping(dataset, "dataset"))
        self.dataset_name: str = self.dataset.get("name") or ""
        self.features: List[Any] = self.dataset.get("features") or []
        self.labels: List[Any] = self.dataset.get("labels") or []

        self.hyper_parameters: Dict[str, Any] = _parse_hyper(raw.get("hyper_parameters"))
        self.epochs: int = self.hyper_parameters["epochs"]
        self.batch_size: int = self.hyper_parameters["batch_size"]
        self.is_eval: bool = self.hyper_parameters["is_eval"]

        self.privacy: Dict[str, Dict[str, Any]] = _parse_privacy(raw.get("privacy"))
        self.use_label_dp: bool = "label_dp" in self.privacy
        self.use_embedding_dp: bool = "embedding_dp" in self.privacy
        # present only when configured: programs test hasattr(yaml_data, 'label_dp_eps')
        if self.use_label_dp:
            self.label_dp_eps: float = self.privacy["label_dp"]["eps"]
        if self.use_embedding_dp:
            self.embedding_dp_eps: Optional[float] = self.privacy["embedding_dp"]["eps"]

        ckpt_path = raw.get("ckpt_path", DEFAULT_CKPT_PATH)
        if ckpt_path is None:
            ckpt_path = DEFAULT_CKPT_PATH
        if not isinstance(ckpt_path, str) or not ckpt_path:
            raise TypeError(f"ckpt_path: expected a non-empty string, got {ckpt_path!r}")
        self.ckpt_path: str = ckpt_path

        self.compress_configs: Dict[str, Dict[str, Any]] = self._collect_compress()

    def _collect_compress(self) -> Dict[str, Dict[str, Any]]:
        """Tensor name -> {compress_type, bit_num}; one name must not declare two settings."""
        found: Dict[str, Dict[str, Any]] = {}
        origin: Dict[str, str] = {}
        for net_key, net in (("train_net", self.train_net), ("eval_net", self.eval_net)):
            for kind, items in (("inputs", net.inputs), ("outputs", net.outputs)):
                for i, item in enumerate(items):
                    if item.compress_type is None:
                        continue
                    where = f"model.{net_key}.{kind}[{i}]"
                    if kind == "inputs" and item.source == "local":
                        logger.warning("%s: compress_type on a local input has no effect (only the "
                                       "gradient of a remote input is sent back)", where)
                    if kind == "outputs" and item.destination == "local":
                        logger.warning("%s: compress_type on a local output has no effect", where)
                    conf = {"compress_type": item.compress_type, "bit_num": item.bit_num}
                    if item.name in found and found[item.name] != conf:
                        raise ValueError(
                            f"{where}: tensor {item.name!r} declares {conf} but {origin[item.name]} "
                            f"declares {found[item.name]} for the same name")
                    found.setdefault(item.name, conf)
                    origin.setdefault(item.name, where)
        return found

    # ---------------------------------------------------------- convenience views
    @property
    def train_net_name(self) -> str:
        return self.train_net.name

    @property
    def train_net_ins(self) -> List[TensorItem]:
        return self.train_net.inputs

    @property
    def train_net_outs(self) -> List[TensorItem]:
        return self.train_net.outputs

    @property
    def train_net_in_names(self) -> List[str]:
        return self.train_net.input_names

    @property
    def train_net_out_names(self) -> List[str]:
        return self.train_net.output_names

    @property
    def eval_net_ins(self) -> List[TensorItem]:
        return self.eval_net.inputs

    @property
    def eval_net_outs(self) -> List[TensorItem]:
        return self.eval_net.outputs

    @property
    def train_net_inputs(self) -> List[TensorItem]:
        return self.train_net.inputs

    @property
    def train_net_outputs(self) -> List[TensorItem]:
        return self.train_net.outputs

    @property
    def eval_net_name(self) -> str:
        return self.eval_net.name

    @property
    def eval_net_gt(self) -> Optional[str]:
        return self.eval_net.gt

    def __repr__(self) -> str:
        return (f"FLYamlData(role={self.role!r}, train_net={self.train_net.name!r}, "
                f"inputs={self.train_net.input_names}, outputs={self.train_net.output_names}, "
                f"opts={[o.type for o in self.opts]}, grad_scalers={len(self.grad_scalers)})")


# ---------------------------------------------------------------------- helpers
def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{path}: expected a mapping, got {_type_name(value)}")
    return value


def _check_keys(value: Mapping[str, Any], allowed: tuple, path: str) -> None:
    """Warn about each unknown key: the original ignored them, a typo should still be visible."""
    where = f"{path}." if path != "<root>" else ""
    for key in value:
        if key not in allowed:
            logger.warning("%s%s: unknown key, ignored (known keys at %s: %s)", where, key, path,
                           ", ".join(allowed))


def _name(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{path}: expected a non-empty string, got {_type_name(value)}")
    if not value.strip():
        raise ValueError(f"{path}: expected a non-empty string, got {value!r}")
    return value


def _parse_item(raw: Any, path: str, direction_key: str, allowed_dirs: tuple,
                keys: tuple) -> TensorItem:
    item = _mapping(raw, path)
    _check_keys(item, keys, path)
    if "name" not in item:
        raise ValueError(f"{path}.name: required key is missing")
    name = _name(item["name"], f"{path}.name")
    direction = item.get(direction_key)
    if direction is None:
        raise ValueError(f"{path}.{direction_key}: required, one of {', '.join(allowed_dirs)}")
    if not isinstance(direction, str):
        raise TypeError(f"{path}.{direction_key}: expected a string ({', '.join(allowed_dirs)}), "
                        f"got {_type_name(direction)}")
    if direction not in allowed_dirs:
        raise ValueError(f"{path}.{direction_key}: {direction!r} is not one of "
                         f"{', '.join(allowed_dirs)}")
    compress_type, bit_num = _parse_compress(item, path)
    result = TensorItem(name=name, compress_type=compress_type, bit_num=bit_num)
    setattr(result, direction_key, direction)
    return result._fill(item)


def _parse_compress(item: Mapping[str, Any], path: str) -> tuple:
    compress_type = item.get("compress_type")
    bit_num = item.get("bit_num")
    if compress_type is None:
        if bit_num is not None:
            raise ValueError(f"{path}.bit_num: given without compress_type (set compress_type to "
                             f"one of {', '.join(_BIT_COMPRESS_TYPES)})")
        return None, None
    if not isinstance(compress_type, str):
        raise TypeError(f"{path}.compress_type: expected a string ({', '.join(COMPRESS_TYPES)}), "
                        f"got {_type_name(compress_type)}")
    if compress_type == NO_COMPRESS:
        return None, None
    if compress_type not in COMPRESS_TYPES:
        raise ValueError(f"{path}.compress_type: {compress_type!r} is not one of "
                         f"{', '.join(COMPRESS_TYPES + (NO_COMPRESS,))}")
    if compress_type not in _BIT_COMPRESS_TYPES:
        if bit_num is not None and not (_is_number(bit_num) and bit_num == 16):
            raise ValueError(f"{path}.bit_num: {compress_type!r} always uses 16 bits; leave bit_num "
                             f"out (or 16), got {bit_num!r}")
        return compress_type, None
    if bit_num is None:
        return compress_type, DEFAULT_BIT_NUM
    if not isinstance(bit_num, int) or isinstance(bit_num, bool):
        raise TypeError(f"{path}.bit_num: expected an integer in 1..8, got {_type_name(bit_num)}")
    if not 1 <= bit_num <= 8:
        raise ValueError(f"{path}.bit_num: {bit_num} is out of range, expected an integer in 1..8")
    return compress_type, bit_num


def _parse_items(raw: Any, path: str, direction_key: str, allowed: tuple,
                 keys: tuple) -> List[TensorItem]:
    if raw is None:
        raise ValueError(f"{path}: required, a non-empty list")
    if not isinstance(raw, list):
        raise TypeError(f"{path}: expected a non-empty list, got {_type_name(raw)}")
    if not raw:
        raise ValueError(f"{path}: expected a non-empty list, got an empty one")
    items = [_parse_item(entry, f"{path}[{i}]", direction_key, allowed, keys)
             for i, entry in enumerate(raw)]
    _no_duplicates([item.name for item in items], path, ".name")
    return items


def _no_duplicates(names: List[str], path: str, suffix: str) -> None:
    first: Dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            raise ValueError(f"{path}[{i}]{suffix}: duplicate name {name!r} (already at "
                             f"{path}[{first[name]}])")
        first[name] = i


def _parse_net(raw: Any, path: str, keys: tuple) -> NetSpec:
    net = _mapping(raw, path)
    _check_keys(net, keys, path)
    if "name" not in net:
        raise ValueError(f"{path}.name: required key is missing")
    name = _name(net["name"], f"{path}.name")
    inputs = _parse_items(net.get("inputs"), f"{path}.inputs", "source", SOURCES, _INPUT_KEYS)
    outputs = _parse_items(net.get("outputs"), f"{path}.outputs", "destination", DESTINATIONS,
                           _OUTPUT_KEYS)
    gt = net.get("gt")
    if gt is not None:
        gt = _name(gt, f"{path}.gt")
    spec = NetSpec(name=name, inputs=inputs, outputs=outputs, gt=gt)._fill(net)
    spec.update(inputs=inputs, outputs=outputs)  # the same item objects on both faces
    return spec


def _parse_sens(value: Any, path: str) -> Sens:
    if value is None:
        return None
    if _is_number(value):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{path}: constant sensitivity must be finite, got {value}")
        return value
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"{path}: expected a number or a non-empty tag string, got {value!r}")
        if _FLOAT_RE.match(value.strip()):
            logger.warning("%s: %r is read as a tag of the received sens dict, not a number "
                           "(write it with a decimal point, e.g. 1024.0, for a constant)",
                           path, value)
        return value
    raise TypeError(f"{path}: expected a number (constant sensitivity) or a string (tag of the "
                    f"received sens dict), got {_type_name(value)}")


def _name_filters(raw: Any, path: str) -> List[str]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise TypeError(f"{path}: expected a list of {{name: ...}} filters, got {_type_name(raw)}")
    names = []
    for i, entry in enumerate(raw):
        entry = _mapping(entry, f"{path}[{i}]")
        _check_keys(entry, ("name",), f"{path}[{i}]")
        if "name" not in entry:
            raise ValueError(f"{path}[{i}].name: required key is missing")
        names.append(_name(entry["name"], f"{path}[{i}].name"))
    return names


def _parse_grad(raw: Any, path: str, train_inputs: List[str], train_outputs: List[str],
                keys: tuple) -> GradSpec:
    grad = _mapping(raw, path)
    _check_keys(grad, keys, path)
    inputs_raw = grad.get("inputs")
    if inputs_raw is None:
        raise ValueError(f"{path}.inputs: required, a non-empty list of {{name: ...}}")
    if not isinstance(inputs_raw, list):
        raise TypeError(f"{path}.inputs: expected a list of {{name: ...}}, "
                        f"got {_type_name(inputs_raw)}")
    if not inputs_raw:
        raise ValueError(f"{path}.inputs: expected a non-empty list, got an empty one")
    inputs = []
    for i, entry in enumerate(inputs_raw):
        entry_path = f"{path}.inputs[{i}]"
        entry = _mapping(entry, entry_path)
        _check_keys(entry, ("name",), entry_path)
        if "name" not in entry:
            raise ValueError(f"{entry_path}.name: required key is missing")
        name = _name(entry["name"], f"{entry_path}.name")
        if name not in train_inputs:
            raise ValueError(f"{entry_path}.name: {name!r} is not an input of train_net "
                             f"(inputs: {', '.join(train_inputs)})")
        inputs.append(name)
    _no_duplicates(inputs, f"{path}.inputs", ".name")
    if "output" not in grad or grad["output"] is None:
        raise ValueError(f"{path}.output: required, a mapping {{name: ...}}")
    output = _mapping(grad["output"], f"{path}.output")
    _check_keys(output, ("name",), f"{path}.output")
    if "name" not in output:
        raise ValueError(f"{path}.output.name: required key is missing")
    out_name = _name(output["name"], f"{path}.output.name")
    if out_name not in train_outputs:
        raise ValueError(f"{path}.output.name: {out_name!r} is not an output of train_net "
                         f"(outputs: {', '.join(train_outputs)})")
    sens = _parse_sens(grad.get("sens"), f"{path}.sens")
    params = _name_filters(grad.get("params"), f"{path}.params") if "params" in keys else []
    return GradSpec(inputs=inputs, output=out_name, sens=sens, params=params, path=path)._fill(grad)


def _coerce_hyper(value: Any) -> Any:
    """yaml 1.1 reads ``1e-3`` (no dot) as a string; optimizer kwargs want the number."""
    if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
        return float(value)
    return value


def _parse_opt(raw: Any, path: str, train_inputs: List[str], train_outputs: List[str]) -> OptSpec:
    opt = _mapping(raw, path)
    _check_keys(opt, _OPT_KEYS, path)
    if "type" not in opt:
        raise ValueError(f"{path}.type: required key is missing (a mindspore.nn optimizer class "
                         f"name or a label for a user optimizer)")
    opt_type = _name(opt["type"], f"{path}.type")
    grads_raw = opt.get("grads")
    if grads_raw is None:
        raise ValueError(f"{path}.grads: required, a non-empty list of gradient terms")
    if not isinstance(grads_raw, list):
        raise TypeError(f"{path}.grads: expected a list of gradient terms, "
                        f"got {_type_name(grads_raw)}")
    if not grads_raw:
        raise ValueError(f"{path}.grads: expected a non-empty list, got an empty one")
    grads = [_parse_grad(g, f"{path}.grads[{j}]", train_inputs, train_outputs, _GRAD_KEYS)
             for j, g in enumerate(grads_raw)]
    params = _name_filters(opt.get("params"), f"{path}.params")
    hyper = opt.get("hyper_parameters")
    if hyper is None:
        hyper = {}
    hyper = dict(_mapping(hyper, f"{path}.hyper_parameters"))
    for key in hyper:
        if not isinstance(key, str):
            raise TypeError(f"{path}.hyper_parameters: keys must be strings, got {key!r}")
        hyper[key] = _coerce_hyper(hyper[key])
    spec = OptSpec(type=opt_type, grads=grads, params=params, hyper_parameters=hyper,
                   path=path)._fill(opt)
    spec["grads"] = grads
    if "hyper_parameters" in opt:
        spec["hyper_parameters"] = hyper
    return spec


def _parse_hyper(raw: Any) -> Dict[str, Any]:
    result: Dict[str, Any] = {"epochs": 1, "batch_size": 1, "is_eval": False}
    if raw is None:
        return result
    hyper = _mapping(raw, "hyper_parameters")
    _check_keys(hyper, _HYPER_KEYS, "hyper_parameters")
    for key in ("epochs", "batch_size"):
        if key in hyper:
            value = hyper[key]
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"hyper_parameters.{key}: expected a positive integer, "
                                f"got {_type_name(value)}")
            if value < 1:
                raise ValueError(f"hyper_parameters.{key}: expected a positive integer, got {value}")
            result[key] = value
    if "is_eval" in hyper:
        value = hyper["is_eval"]
        if not isinstance(value, bool):
            raise TypeError(f"hyper_parameters.is_eval: expected true or false, "
                            f"got {_type_name(value)}")
        result["is_eval"] = value
    return result


def _parse_privacy(raw: Any) -> Dict[str, Dict[str, Any]]:
    if raw is None:
        return {}
    privacy = _mapping(raw, "privacy")
    result: Dict[str, Dict[str, Any]] = {}
    for scheme, conf in privacy.items():
        path = f"privacy.{scheme}"
        if scheme not in PRIVACY_SCHEMES:
            raise ValueError(f"{path}: unknown privacy scheme (known: {', '.join(PRIVACY_SCHEMES)})")
        conf = {} if conf is None else _mapping(conf, path)
        _check_keys(conf, ("eps",), path)
        eps = conf.get("eps")
        if eps is None:
            if scheme == "label_dp":
                raise ValueError(f"{path}.eps: required, a number >= 0")
        else:
            if not _is_number(eps):
                raise TypeError(f"{path}.eps: expected a number >= 0, got {_type_name(eps)} "
                                f"{eps!r}")
            eps = float(eps)
            if math.isnan(eps) or eps < 0:
                raise ValueError(f"{path}.eps: expected a number >= 0, got {eps}")
        result[scheme] = {"eps": eps}
    return result
