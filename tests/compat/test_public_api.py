"""The original's vertical public surface: module paths, names, keywords and return types."""
from collections import OrderedDict

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from tests.communication.conftest import free_port, pki, ssl_kwargs  # noqa: F401 (pki: fixture)

# the original's default cipher_list: three of its suites (PSK, CCM) are not forward-secret AEAD
ORIGINAL_CIPHERS = ("ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:"
                    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-PSK-CHACHA20-POLY1305:"
                    "ECDHE-ECDSA-AES128-CCM:ECDHE-ECDSA-AES256-CCM:ECDHE-ECDSA-CHACHA20-POLY1305")


def test_original_import_paths_name_the_same_objects():
    import mindspore_federated as mf
    from mindspore_federated import (FLModel, FLYamlData, PartyGradOperation, PartyOptimizer,  # noqa: F401
                                     PartyGradScaler, vfl_utils, tensor_utils, privacy,
                                     VerticalFederatedCommunicator, ServerConfig, SSLConfig, CompressConfig)
    from mindspore_federated.startup.vertical_federated_local import (
        VerticalFederatedCommunicator as startup_vfc, ServerConfig as startup_sc)
    from mindspore_federated.startup.server_config import ServerConfig as server_config_sc
    from mindspore_federated.startup.ssl_config import SSLConfig as startup_ssl, default_cipher_list
    from mindspore_federated.startup.compress_config import CompressConfig as startup_cc, NO_COMPRESS_TYPE
    from mindspore_federated.common.vfl_utils import FLYamlData as utils_yaml
    from mindspore_federated.common import _checkparam as validator
    from mindspore_federated.trainer.vfl_model import FLModel as vfl_model_flmodel
    from mindspore_federated.trainer.vfl_optim import PartyOptimizer as optim_po
    from mindspore_federated.privacy.dp import LabelDP, EmbeddingDP
    from mindspore_federated.privacy import LabelDP as LabelDP2, EmbeddingDP as EmbeddingDP2

    assert startup_vfc is VerticalFederatedCommunicator and startup_sc is server_config_sc is ServerConfig
    assert startup_ssl is SSLConfig and startup_cc is CompressConfig and utils_yaml is FLYamlData
    assert vfl_model_flmodel is FLModel and optim_po is PartyOptimizer
    assert LabelDP is LabelDP2 and EmbeddingDP is EmbeddingDP2 and privacy.LabelDP is LabelDP
    assert mf.vfl_utils is vfl_utils and vfl_utils.FLYamlData is FLYamlData
    assert NO_COMPRESS_TYPE == "no_compress" and isinstance(default_cipher_list, str)
    assert validator.check_int_range(8, 1, 8, validator.INC_BOTH, arg_name="bit_num") == 8
    with pytest.raises(ValueError, match="'bit_num' must be in \\[1, 8\\]"):
        validator.check_int_range(9, 1, 8, validator.INC_BOTH, arg_name="bit_num")
    with pytest.raises(ValueError, match="'compress_type' must be one of"):
        validator.check_string("zip", ["min_max", "bit_pack"], arg_name="compress_type")


def test_vfl_utils_helpers():
    from mindspore_federated import vfl_utils

    class Two(nn.Cell):
        def __init__(self):
            super().__init__()
            self.deep_dense = nn.Dense(2, 2)
            self.wide_dense = nn.Dense(2, 1)

        def construct(self, x):
            return self.deep_dense(x), self.wide_dense(x)

    net = Two()
    assert [p.name for p in vfl_utils.get_params_list_by_name(net, "wide")] == ["wide_dense.weight", "wide_dense.bias"]
    both = vfl_utils.get_params_by_name(net, ["dense", "deep"])  # overlapping filters: each once
    assert len(both) == 4
    x = ms.Tensor(np.ones((3, 2), np.float32))
    np.testing.assert_array_equal(vfl_utils.IthOutputCellInTuple(net, 1)(x).asnumpy(), net(x)[1].asnumpy())


def test_tensor_utils_round_trip():
    from mindspore_federated import CompressConfig, tensor_utils
    message = OrderedDict(a=ms.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3)),
                          grads=OrderedDict(b=ms.Tensor(np.array([1, 0, 1], np.int32))))
    obj = tensor_utils.tensor_dict_to_tensor_list_pybind_obj(message, "step", {"b": CompressConfig("bit_pack", 1)})
    name, back = tensor_utils.tensor_list_pybind_obj_to_tensor_dict(obj)
    assert name == "step" and list(back) == ["a", "grads"] and list(back["grads"]) == ["b"]
    np.testing.assert_array_equal(back["a"].asnumpy(), message["a"].asnumpy())
    np.testing.assert_array_equal(back["grads"]["b"].asnumpy(), [1, 0, 1])
    key, tensor = tensor_utils.tensor_pybind_obj_to_tensor(
        tensor_utils.tensor_to_tensor_pybind_obj(message["a"], "a"))
    assert key == "a" and tensor.shape == (2, 3)


@pytest.mark.timeout(60)
def test_communicator_original_keywords_and_methods():
    from mindspore_federated.startup.vertical_federated_local import VerticalFederatedCommunicator, ServerConfig
    leader_cfg = ServerConfig(server_name="leader", server_address=f"127.0.0.1:{free_port()}")
    follower_cfg = ServerConfig(server_name="follower", server_address=f"127.0.0.1:{free_port()}")
    leader = VerticalFederatedCommunicator(http_server_config=leader_cfg, remote_server_config=follower_cfg)
    follower = VerticalFederatedCommunicator(http_server_config=follower_cfg, remote_server_config=[leader_cfg])
    assert leader.http_server_config() is leader_cfg and leader.remote_server_config() is follower_cfg
    assert follower.remote_server_config() == [leader_cfg]
    leader.launch()
    follower.launch()
    try:
        sent = OrderedDict(embedding=ms.Tensor(np.ones((2, 3), np.float32)))
        assert leader.send_tensors(target_server_name="follower", tensor_dict=sent) is None
        got = follower.receive(target_server_name="leader")
        assert isinstance(got, OrderedDict) and list(got) == ["embedding"]
        scale = {"loss": OrderedDict(embedding=ms.Tensor(np.full((2, 3), 2.0, np.float32)))}
        follower.send_tensors("leader", scale)
        back = leader.receive("follower")
        np.testing.assert_array_equal(back["loss"]["embedding"].asnumpy(), scale["loss"]["embedding"].asnumpy())
    finally:
        leader.close()
        follower.close()


@pytest.mark.timeout(120)
def test_tls_with_the_original_ssl_config_call(pki, caplog):  # noqa: F811
    """SSLConfig as the original's programs build it (its default cipher list included) gives a
    working mutually authenticated link; the weak suites are named in one warning."""
    from mindspore_federated.startup.ssl_config import SSLConfig
    from mindspore_federated.startup.vertical_federated_local import VerticalFederatedCommunicator, ServerConfig
    configs = {n: ServerConfig(server_name=n, server_address=f"127.0.0.1:{free_port()}") for n in ("leader", "follower")}
    comms = {}
    with caplog.at_level("WARNING", logger="mindspore_federated.communication.tls"):
        for name, peer in (("leader", "follower"), ("follower", "leader")):
            kw = ssl_kwargs(pki, name)
            ssl_config = SSLConfig(kw["server_password"], kw["client_password"],
                                   server_cert_path=kw["server_cert_path"], client_cert_path=kw["client_cert_path"],
                                   ca_cert_path=kw["ca_cert_path"], cipher_list=ORIGINAL_CIPHERS)
            comms[name] = VerticalFederatedCommunicator(http_server_config=configs[name],
                                                        remote_server_config=configs[peer],
                                                        enable_ssl=True, ssl_config=ssl_config)
    dropped = [r.getMessage() for r in caplog.records if "cipher_list: dropped" in r.getMessage()]
    assert len(dropped) == 2 and "ECDHE-PSK-CHACHA20-POLY1305" in dropped[0]   # one per SSLConfig
    for comm in comms.values():
        comm.launch()
    try:
        comms["leader"].send_tensors("follower", {"x": ms.Tensor(np.arange(4, dtype=np.float32))})
        np.testing.assert_array_equal(comms["follower"].receive("leader")["x"].asnumpy(), np.arange(4))
    finally:
        for comm in comms.values():
            comm.close()
