"""FLYamlData: parsing, defaults, and one test per validation rule (message names the field)."""
import copy
import logging

import pytest
import yaml

from mindspore_federated import FLYamlData
from mindspore_federated.config.yaml_data import TensorItem


def base() -> dict:
    return {
        "role": "leader",
        "model": {
            "train_net": {
                "name": "head_net",
                "inputs": [{"name": "hidden", "source": "remote", "compress_type": "min_max",
                            "bit_num": 4},
                           {"name": "word_table", "source": "local"},
                           {"name": "ids", "source": "local"}],
                "outputs": [{"name": "loss", "destination": "local"}],
            },
            "eval_net": {
                "name": "head_eval",
                "inputs": [{"name": "hidden", "source": "remote"},
                           {"name": "word_table", "source": "local"}],
                "outputs": [{"name": "logits", "destination": "local"}],
                "gt": "labels",
            },
        },
        "opts": [{
            "type": "Adam",
            "grads": [{"inputs": [{"name": "hidden"}], "output": {"name": "loss"},
                       "sens": 1024.0, "params": [{"name": "dense"}]}],
            "params": [{"name": "dense"}],
            "hyper_parameters": {"learning_rate": 1.0e-3, "eps": "1e-8", "loss_scale": 1024.0},
        }],
        "grad_scalers": [{"inputs": [{"name": "hidden"}, {"name": "word_table"}],
                          "output": {"name": "loss"}, "sens": 1024.0}],
        "dataset": {"name": "wiki", "features": ["ids"], "labels": ["ids"]},
        "hyper_parameters": {"epochs": 3, "batch_size": 2, "is_eval": True},
        "privacy": {"label_dp": {"eps": 1.0}, "embedding_dp": {"eps": None}},
        "ckpt_path": "/tmp/ckpts",
    }


def test_valid_file_parses(tmp_path):
    path = tmp_path / "head.yaml"
    path.write_text(yaml.safe_dump(base()))
    data = FLYamlData(str(path))
    assert data.yaml_data == base()
    assert data.role == "leader"
    assert data.train_net_name == "head_net"
    assert [i.name for i in data.train_net_inputs] == ["hidden", "word_table", "ids"]
    assert data.train_net_inputs[0] == TensorItem("hidden", source="remote",
                                                  compress_type="min_max", bit_num=4)
    assert data.train_net_outputs[0].destination == "local"
    assert data.eval_net_gt == "labels" and data.eval_net_name == "head_eval"
    assert data.opts[0].type == "Adam" and data.opts[0].params == ["dense"]
    assert data.opts[0].hyper_parameters["eps"] == 1e-8  # yaml-1.1 string coerced to float
    assert data.opts[0].grads[0].sens == 1024.0 and data.opts[0].grads[0].params == ["dense"]
    assert data.grad_scalers[0].inputs == ["hidden", "word_table"]
    assert (data.epochs, data.batch_size, data.is_eval) == (3, 2, True)
    assert data.label_dp_eps == 1.0 and data.use_embedding_dp and data.embedding_dp_eps is None
    assert data.ckpt_path == "/tmp/ckpts"
    assert data.compress_configs == {"hidden": {"compress_type": "min_max", "bit_num": 4}}


def test_defaults():
    raw = base()
    for key in ("grad_scalers", "dataset", "hyper_parameters", "privacy", "ckpt_path"):
        del raw[key]
    data = FLYamlData.from_dict(raw)
    assert data.hyper_parameters == {"epochs": 1, "batch_size": 1, "is_eval": False}
    assert data.ckpt_path == "./checkpoints"
    assert data.grad_scalers == [] and data.privacy == {}
    assert not data.use_label_dp
    # as in the original, the eps attributes exist only when the yaml configures the scheme
    assert not hasattr(data, "label_dp_eps") and not hasattr(data, "embedding_dp_eps")


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        FLYamlData(str(missing))
    with pytest.raises(ValueError, match="nope.yaml"):  # what the original raised
        FLYamlData(str(missing))


def test_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("role: [unclosed\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        FLYamlData(str(path))


def test_compress_defaults_and_new_types():
    raw = base()
    items = raw["model"]["train_net"]["inputs"]
    items[0] = {"name": "hidden", "source": "remote", "compress_type": "min_max"}
    items[1]["compress_type"] = "fp16"
    raw["model"]["train_net"]["outputs"][0]["compress_type"] = "bf16"
    raw["model"]["eval_net"]["inputs"][1].update({"compress_type": "fp16", "bit_num": 16})
    data = FLYamlData.from_dict(raw)
    assert data.train_net_inputs[0].bit_num == 8
    assert data.compress_configs["word_table"] == {"compress_type": "fp16", "bit_num": None}
    assert data.compress_configs["loss"]["compress_type"] == "bf16"


def test_no_compress_means_uncompressed():
    raw = base()
    raw["model"]["train_net"]["inputs"][0].update({"compress_type": "no_compress", "bit_num": 8})
    data = FLYamlData.from_dict(raw)
    assert data.train_net_inputs[0].compress_type is None
    assert data.train_net_inputs[0]["compress_type"] == "no_compress"  # the yaml as written
    assert "hidden" not in data.compress_configs


def test_sens_string_that_looks_like_number_warns(caplog):
    raw = base()
    raw["grad_scalers"][0]["sens"] = "1e3"
    with caplog.at_level(logging.WARNING):
        data = FLYamlData.from_dict(raw)
    assert data.grad_scalers[0].sens == "1e3"
    assert "grad_scalers[0].sens" in caplog.text


def _set(path, value):
    """Mutation setting raw[path] = value; path is a list of keys/indices."""
    def mutate(raw):
        node = raw
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def _del(path):
    def mutate(raw):
        node = raw
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return mutate


TI = ["model", "train_net", "inputs"]
TO = ["model", "train_net", "outputs"]
G0 = ["opts", 0, "grads", 0]
S0 = ["grad_scalers", 0]

CASES = [
    # (id, mutation, exception, substring naming the field)
    ("missing_role", _del(["role"]), ValueError, "role: required"),
    ("role_type", _set(["role"], 3), TypeError, "role: expected a string"),
    ("role_value", _set(["role"], "server"), ValueError, "role: 'server' is not one of"),
    ("missing_model", _del(["model"]), ValueError, "model: required"),
    ("model_type", _set(["model"], []), TypeError, "model: expected a mapping"),
    ("missing_train_net", _del(["model", "train_net"]), ValueError, "model.train_net: required"),
    ("missing_eval_net", _del(["model", "eval_net"]), ValueError, "model.eval_net: required"),
    ("missing_net_name", _del(["model", "train_net", "name"]), ValueError,
     "model.train_net.name: required"),
    ("net_name_type", _set(["model", "train_net", "name"], 5), TypeError,
     "model.train_net.name: expected a non-empty string"),
    ("net_name_empty", _set(["model", "train_net", "name"], " "), ValueError,
     "model.train_net.name: expected a non-empty string"),
    ("missing_inputs", _del(TI), ValueError, "model.train_net.inputs: required"),
    ("inputs_type", _set(TI, {"name": "x"}), TypeError, "model.train_net.inputs: expected a"),
    ("inputs_empty", _set(TI, []), ValueError, "model.train_net.inputs: expected a non-empty"),
    ("outputs_empty", _set(TO, []), ValueError, "model.train_net.outputs: expected a non-empty"),
    ("item_type", _set(TI + [1], "word_table"), TypeError,
     "model.train_net.inputs[1]: expected a mapping"),
    ("item_missing_name", _del(TI + [1, "name"]), ValueError,
     "model.train_net.inputs[1].name: required"),
    ("missing_source", _del(TI + [1, "source"]), ValueError,
     "model.train_net.inputs[1].source: required"),
    ("source_value", _set(TI + [1, "source"], "peer"), ValueError,
     "model.train_net.inputs[1].source: 'peer' is not one of local, remote"),
    ("source_type", _set(TI + [1, "source"], 1), TypeError, "model.train_net.inputs[1].source"),
    ("destination_value", _set(TO + [0, "destination"], "both"), ValueError,
     "model.train_net.outputs[0].destination: 'both' is not one of"),
    ("dup_input", _set(TI + [2, "name"], "hidden"), ValueError,
     "model.train_net.inputs[2].name: duplicate name 'hidden' (already at "
     "model.train_net.inputs[0])"),
    ("dup_output", lambda r: r["model"]["train_net"]["outputs"].append(
        {"name": "loss", "destination": "remote"}), ValueError,
     "model.train_net.outputs[1].name: duplicate name 'loss'"),
    ("dup_eval_output", lambda r: r["model"]["eval_net"]["outputs"].append(
        {"name": "logits", "destination": "remote"}), ValueError,
     "model.eval_net.outputs[1].name: duplicate"),
    ("eval_gt_type", _set(["model", "eval_net", "gt"], 1), TypeError, "model.eval_net.gt"),
    ("compress_value", _set(TI + [0, "compress_type"], "zip"), ValueError,
     "model.train_net.inputs[0].compress_type: 'zip' is not one of"),
    ("compress_type_type", _set(TI + [0, "compress_type"], 8), TypeError,
     "model.train_net.inputs[0].compress_type"),
    ("bit_num_high", _set(TI + [0, "bit_num"], 9), ValueError,
     "model.train_net.inputs[0].bit_num: 9 is out of range"),
    ("bit_num_low", _set(TI + [0, "bit_num"], 0), ValueError,
     "model.train_net.inputs[0].bit_num: 0 is out of range"),
    ("bit_num_type", _set(TI + [0, "bit_num"], 4.0), TypeError,
     "model.train_net.inputs[0].bit_num: expected an integer"),
    ("bit_num_bool", _set(TI + [0, "bit_num"], True), TypeError,
     "model.train_net.inputs[0].bit_num"),
    ("bit_num_without_type", _del(TI + [0, "compress_type"]), ValueError,
     "model.train_net.inputs[0].bit_num: given without compress_type"),
    ("bit_num_with_fp16", _set(TI + [0, "compress_type"], "fp16"), ValueError,
     "model.train_net.inputs[0].bit_num: 'fp16' always uses 16 bits"),
    ("compress_conflict", lambda r: r["model"]["eval_net"]["inputs"][0].update(
        {"compress_type": "min_max", "bit_num": 2}), ValueError,
     "model.eval_net.inputs[0]: tensor 'hidden' declares"),
    ("missing_opts", _del(["opts"]), ValueError, "opts: required"),
    ("opts_type", _set(["opts"], {"type": "Adam"}), TypeError, "opts: expected a list"),
    ("opt_type_missing", _del(["opts", 0, "type"]), ValueError, "opts[0].type: required"),
    ("opt_type_type", _set(["opts", 0, "type"], 3), TypeError, "opts[0].type"),
    ("opt_grads_missing", _del(["opts", 0, "grads"]), ValueError, "opts[0].grads: required"),
    ("opt_grads_empty", _set(["opts", 0, "grads"], []), ValueError, "opts[0].grads: expected a "
     "non-empty"),
    ("opt_grads_type", _set(["opts", 0, "grads"], "loss"), TypeError, "opts[0].grads: expected"),
    ("opt_params_type", _set(["opts", 0, "params"], "dense"), TypeError, "opts[0].params:"),
    ("opt_params_name_type", _set(["opts", 0, "params", 0, "name"], 1), TypeError,
     "opts[0].params[0].name"),
    ("opt_hyper_type", _set(["opts", 0, "hyper_parameters"], [1]), TypeError,
     "opts[0].hyper_parameters: expected a mapping"),
    ("grad_inputs_missing", _del(G0 + ["inputs"]), ValueError, "opts[0].grads[0].inputs: required"),
    ("grad_inputs_empty", _set(G0 + ["inputs"], []), ValueError,
     "opts[0].grads[0].inputs: expected a non-empty"),
    ("grad_input_unknown", _set(G0 + ["inputs", 0, "name"], "hiden"), ValueError,
     "opts[0].grads[0].inputs[0].name: 'hiden' is not an input of train_net "
     "(inputs: hidden, word_table, ids)"),
    ("grad_input_dup", lambda r: r["opts"][0]["grads"][0]["inputs"].append({"name": "hidden"}),
     ValueError, "opts[0].grads[0].inputs[1].name: duplicate"),
    ("grad_output_missing", _del(G0 + ["output"]), ValueError, "opts[0].grads[0].output: required"),
    ("grad_output_type", _set(G0 + ["output"], "loss"), TypeError,
     "opts[0].grads[0].output: expected a mapping"),
    ("grad_output_unknown", _set(G0 + ["output", "name"], "hidden"), ValueError,
     "opts[0].grads[0].output.name: 'hidden' is not an output of train_net (outputs: loss)"),
    ("grad_sens_type", _set(G0 + ["sens"], [1.0]), TypeError,
     "opts[0].grads[0].sens: expected a number"),
    ("grad_sens_bool", _set(G0 + ["sens"], True), TypeError, "opts[0].grads[0].sens"),
    ("grad_sens_inf", _set(G0 + ["sens"], float("inf")), ValueError,
     "opts[0].grads[0].sens: constant sensitivity must be finite"),
    ("grad_sens_empty", _set(G0 + ["sens"], ""), ValueError, "opts[0].grads[0].sens"),
    ("grad_params_type", _set(G0 + ["params"], {"name": "x"}), TypeError,
     "opts[0].grads[0].params"),
    ("scalers_type", _set(["grad_scalers"], {"inputs": []}), TypeError,
     "grad_scalers: expected a list"),
    ("scaler_input_unknown", _set(S0 + ["inputs", 1, "name"], "labels"), ValueError,
     "grad_scalers[0].inputs[1].name: 'labels' is not an input of train_net"),
    ("scaler_output_unknown", _set(S0 + ["output", "name"], "logits"), ValueError,
     "grad_scalers[0].output.name: 'logits' is not an output of train_net"),
    ("scaler_dup_output", lambda r: r["grad_scalers"].append(copy.deepcopy(r["grad_scalers"][0])),
     ValueError, "grad_scalers[1].output.name: 'loss' is already the output of grad_scalers[0]"),
    ("dataset_type", _set(["dataset"], "wiki"), TypeError, "dataset: expected a mapping"),
    ("hyper_type", _set(["hyper_parameters"], [1]), TypeError, "hyper_parameters: expected a"),
    ("epochs_type", _set(["hyper_parameters", "epochs"], "3"), TypeError,
     "hyper_parameters.epochs: expected a positive integer"),
    ("epochs_value", _set(["hyper_parameters", "epochs"], 0), ValueError,
     "hyper_parameters.epochs: expected a positive integer, got 0"),
    ("batch_size_value", _set(["hyper_parameters", "batch_size"], -2), ValueError,
     "hyper_parameters.batch_size"),
    ("is_eval_type", _set(["hyper_parameters", "is_eval"], "yes"), TypeError,
     "hyper_parameters.is_eval: expected true or false"),
    ("privacy_type", _set(["privacy"], ["label_dp"]), TypeError, "privacy: expected a mapping"),
    ("privacy_unknown_scheme", _set(["privacy", "gaussian_dp"], {"eps": 1}), ValueError,
     "privacy.gaussian_dp: unknown privacy scheme (known: label_dp, embedding_dp)"),
    ("label_dp_eps_missing", _set(["privacy", "label_dp"], {}), ValueError,
     "privacy.label_dp.eps: required"),
    ("label_dp_eps_negative", _set(["privacy", "label_dp", "eps"], -1), ValueError,
     "privacy.label_dp.eps: expected a number >= 0, got -1"),
    ("label_dp_eps_type", _set(["privacy", "label_dp", "eps"], "1e-3"), TypeError,
     "privacy.label_dp.eps: expected a number"),
    ("embedding_dp_eps_negative", _set(["privacy", "embedding_dp", "eps"], -0.5), ValueError,
     "privacy.embedding_dp.eps: expected a number >= 0"),
    ("ckpt_path_type", _set(["ckpt_path"], 3), TypeError, "ckpt_path: expected a non-empty string"),
]


@pytest.mark.parametrize("mutate,exc,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validation_rule(mutate, exc, message):
    raw = base()
    mutate(raw)
    with pytest.raises(exc) as info:
        FLYamlData.from_dict(raw)
    assert message in str(info.value), str(info.value)


# Unknown keys: the original ignored them, so they load with one warning naming the key path.
UNKNOWN_KEY_CASES = [
    ("unknown_top_key", _set(["optimizers"], []), "optimizers: unknown key"),
    ("unknown_model_key", _set(["model", "test_net"], {}), "model.test_net: unknown"),
    ("unknown_net_key", _set(["model", "train_net", "gt"], "y"),
     "model.train_net.gt: unknown key"),
    ("item_unknown_key", _set(TI + [1, "dtype"], "float32"),
     "model.train_net.inputs[1].dtype: unknown key"),
    ("opt_unknown_key", _set(["opts", 0, "lr"], 0.1), "opts[0].lr: unknown key"),
    ("opt_params_item", _set(["opts", 0, "params", 0], {"name": "dense", "nam": "x"}),
     "opts[0].params[0].nam: unknown key"),
    ("grad_unknown_key", _set(G0 + ["outputs"], []),
     "opts[0].grads[0].outputs: unknown key"),
    ("scaler_params_not_allowed", _set(S0 + ["params"], [{"name": "x"}]),
     "grad_scalers[0].params: unknown key"),
    ("hyper_unknown", _set(["hyper_parameters", "lr"], 1),
     "hyper_parameters.lr: unknown key"),
    ("privacy_unknown_key", _set(["privacy", "label_dp", "delta"], 0.1),
     "privacy.label_dp.delta: unknown key"),
]


@pytest.mark.parametrize("mutate,message", [c[1:] for c in UNKNOWN_KEY_CASES],
                         ids=[c[0] for c in UNKNOWN_KEY_CASES])
def test_unknown_key_warns_and_loads(mutate, message, caplog):
    raw = base()
    mutate(raw)
    with caplog.at_level(logging.WARNING, logger="mindspore_federated.config.yaml_data"):
        data = FLYamlData.from_dict(raw)
    hits = [r for r in caplog.records if message in r.getMessage()]
    assert len(hits) == 1, caplog.text
    assert data.role == "leader"


def test_root_must_be_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- role\n")
    with pytest.raises(TypeError, match="<root>: expected a mapping"):
        FLYamlData(str(path))


def test_embedding_dp_without_eps_and_null_privacy():
    raw = base()
    raw["privacy"] = {"embedding_dp": None}
    data = FLYamlData.from_dict(raw)
    assert data.use_embedding_dp and data.embedding_dp_eps is None and not data.use_label_dp
    raw["privacy"] = {"embedding_dp": {"eps": 0}}
    assert FLYamlData.from_dict(raw).embedding_dp_eps == 0.0
