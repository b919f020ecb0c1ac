"""The parties' models and training loops, shared by the local and the two-process scripts.

Call pattern of the original example: each party wraps its networks in FLModel (from the yaml
files), the leader's bottom and top run forward, the top's backward returns d(loss)/d(scores);
the first two go to the leader's bottom, the other two to the follower's bottom.
"""
import logging
import os
from collections import OrderedDict

import mindspore as ms

from criteo_dataset import create_joined_dataset
from mindspore_federated import FLModel, FLYamlData
from mindspore_federated.privacy import LabelDP
from wide_and_deep import (AUCMetric, BottomLossNet, LeaderTopEvalNet, LeaderTopLossNet, LeaderTopNet,
                           WideDeepModel)

logger = logging.getLogger("splitnn_criteo")


def set_context(config):
    ms.set_seed(config.seed)
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target=config.device_target)


class Leader:
    """The leader's bottom and top FLModels, the AUC metric, and LabelDP when asked for."""

    def __init__(self, config):
        self.ckpt_path = config.ckpt_path
        top_yaml = FLYamlData(config.leader_top_yaml_path)
        bottom_net = WideDeepModel(config, config.leader_field_size)
        self.bottom = FLModel(yaml_data=FLYamlData(config.leader_bottom_yaml_path),
                              network=BottomLossNet(bottom_net, config), eval_network=bottom_net)
        top_net = LeaderTopNet()
        self.metric = AUCMetric()
        self.top = FLModel(yaml_data=top_yaml, network=LeaderTopLossNet(top_net), metrics=self.metric,
                           eval_network=LeaderTopEvalNet(top_net))
        self.label_dp = LabelDP(top_yaml.label_dp_eps) if config.label_dp else None
        if self.label_dp is not None:
            logger.info("LabelDP on the training labels: eps=%s", top_yaml.label_dp_eps)

    def train_step(self, item, follower_embedding):
        """One step given the follower's scores; returns (loss, gradients for the follower)."""
        if self.label_dp is not None:
            item["label"] = self.label_dp(item["label"])
        item.update(self.bottom.forward_one_step(item))
        out = self.top.forward_one_step(item, follower_embedding)
        scale = self.top.backward_one_step(item, follower_embedding)
        grads = list(scale["loss"].items())
        self.bottom.backward_one_step(item, sens={"loss": OrderedDict(grads[:2])})
        return out["loss"], {"loss": OrderedDict(grads[2:])}

    def eval_step(self, item, follower_embedding):
        embedding = OrderedDict(follower_embedding)
        embedding.update(self.bottom.forward_one_step(item))
        self.top.eval_one_step(item, embedding)

    def auc(self):
        value = self.metric.eval()
        self.metric.clear()
        return value

    def save(self):
        self.top.save_ckpt(self.ckpt_path)
        self.bottom.save_ckpt(self.ckpt_path)

    def load(self):
        self.top.load_ckpt("train", self.ckpt_path)
        self.bottom.load_ckpt("train", self.ckpt_path)


class Follower:
    """The follower's bottom FLModel."""

    def __init__(self, config):
        self.ckpt_path = config.ckpt_path
        net = WideDeepModel(config, config.follower_field_size)
        self.bottom = FLModel(yaml_data=FLYamlData(config.follower_bottom_yaml_path),
                              network=BottomLossNet(net, config), eval_network=net)

    def forward(self, item):
        return self.bottom.forward_one_step(item)

    def backward(self, item, scale):
        self.bottom.backward_one_step(item, sens=scale)

    def eval_forward(self, item):
        return self.bottom.forward_one_step(item)

    def save(self):
        self.bottom.save_ckpt(self.ckpt_path)

    def load(self):
        self.bottom.load_ckpt("train", self.ckpt_path)


def log_step(config, epoch, step, total, loss):
    if step % config.log_every == 0 or step == total:
        logger.info("epoch %d step %d/%d loss: %f", epoch, step, total, float(loss.asnumpy()))


def check_sizes(train_size, eval_size):
    if not train_size or not eval_size:
        raise ValueError(f"not enough joined samples for one batch (train batches {train_size}, eval batches "
                         f"{eval_size}): lower --batch_size or generate more data")


def joined_datasets(config, train_dir, eval_dir, role):
    """(train, eval) batches of one party's joined data; raises when there is not one batch."""
    ds_train = create_joined_dataset(train_dir, train_mode=True, batch_size=config.batch_size, seed=config.seed,
                                     role=role)
    ds_eval = create_joined_dataset(eval_dir, train_mode=False, batch_size=config.batch_size, seed=config.seed,
                                    role=role)
    check_sizes(ds_train.get_dataset_size(), ds_eval.get_dataset_size())
    return ds_train, ds_eval


def make_communicator(config, role, peer):
    """The communicator of the two-process training scripts (mutual TLS with --enable_ssl True)."""
    from mindspore_federated import SSLConfig, ServerConfig, VerticalFederatedCommunicator

    ssl_config = None
    if config.enable_ssl:
        ssl_config = SSLConfig(config.server_password, config.client_password, config.server_cert_path,
                               config.client_cert_path, config.ca_cert_path, config.crl_path or None)
    communicator = VerticalFederatedCommunicator(ServerConfig(role, config.http_server_address),
                                                 ServerConfig(peer, config.remote_server_address),
                                                 enable_ssl=config.enable_ssl, ssl_config=ssl_config)
    communicator.launch()
    return communicator


def run_leader(config, communicator, ds_train, ds_eval, peer="follower"):
    """The leader's training: the follower's scores come in, their gradients go back; AUC per epoch."""
    leader = Leader(config)
    if config.resume:
        leader.load()
    train_size = ds_train.get_dataset_size()
    for epoch in range(config.epochs):
        for step, item in enumerate(ds_train.create_dict_iterator(num_epochs=1), start=1):
            follower_embedding = communicator.receive(peer)
            loss, follower_scale = leader.train_step(item, follower_embedding)
            communicator.send_tensors(peer, follower_scale)
            log_step(config, epoch, step, train_size, loss)
        leader.save()
        for item in ds_eval.create_dict_iterator(num_epochs=1):
            leader.eval_step(item, communicator.receive(peer))
        logger.info("epoch %d auc: %f", epoch, leader.auc())


def run_follower(config, communicator, ds_train, ds_eval, peer="leader"):
    """The follower's training: its scores go out, their gradients come back."""
    follower = Follower(config)
    if config.resume:
        follower.load()
    for epoch in range(config.epochs):
        for item in ds_train.create_dict_iterator(num_epochs=1):
            communicator.send_tensors(peer, follower.forward(item))
            follower.backward(item, communicator.receive(peer))
        follower.save()
        for item in ds_eval.create_dict_iterator(num_epochs=1):
            communicator.send_tensors(peer, follower.eval_forward(item))
        logger.info("epoch %d done", epoch)


def data_dirs(path):
    return os.path.join(path, "train"), os.path.join(path, "eval")
