"""The parties' models and training loops, shared by the local and the two-process scripts.

Call pattern of the original example: each party wraps its networks in FLModel (from the yaml
files), the leader's bottom and top run forward, the top's backward returns d(loss)/d(scores);
the first two go to the leader's bottom, the other two to the follower's bottom. The local program
hands the tensors over in memory; the two-process programs exchange them through the library's
two-party protocol (`run_leader` / `run_follower`: handshake, step-tagged messages, ABORT).
"""
import logging
import os
import signal
from collections import OrderedDict

import mindspore as ms

from criteo_dataset import create_joined_dataset
from mindspore_federated import FLModel, FLYamlData
from mindspore_federated.privacy import LabelDP
from mindspore_federated.protocol import (CommunicatorChannel, FLModelFollower, FollowerLoop, GradientStats, Kind,
                                          PeerAborted, PeerSession, ProtocolError)
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


# the two-process runs speak the library's protocol (docs/protocol.md); a stopped run restarts from
# the checkpoints of the last finished epoch
REMEDY = "stop both parties and restart both with --resume True (checkpoints of the last finished epoch)"
PEER_TIMEOUT = 600.0   # seconds to wait for the peer's handshake, and for any one message of the run


def _settings(config, ds_train, ds_eval):
    """What both parties must share (the handshake compares it): model sizes, seed, batches, epochs."""
    names = ("epochs", "batch_size", "seed", "leader_field_size", "follower_field_size", "vocab_size", "emb_dim",
             "deep_layer_dim", "deep_layer_act", "init_args", "l2_coef", "resume")
    settings = {name: getattr(config, name) for name in names}
    settings.update(train_batches=ds_train.get_dataset_size(), eval_batches=ds_eval.get_dataset_size())
    return settings


def _session(communicator, role, peer, completed, settings):
    """The protocol session over the communicator; `completed` is a one-item list of finished steps."""
    channel = CommunicatorChannel(communicator, peer, PEER_TIMEOUT)
    session = PeerSession(channel, role, peer, lambda: completed[0], remedy=REMEDY)
    logger.info("waiting for the %s (handshake, up to %g s)", peer, PEER_TIMEOUT)
    session.handshake(settings, timeout=PEER_TIMEOUT)
    logger.info("handshake with the %s done: same settings and data sizes", peer)
    return session


def _stopping(session, role, err):
    """Tell the peer why this party stops (not when the peer stopped first or is gone)."""
    if session is None or isinstance(err, (PeerAborted, ConnectionError)):
        return
    if isinstance(err, ProtocolError):
        session.report(err)
    else:
        what = "was interrupted" if isinstance(err, (KeyboardInterrupt, SystemExit)) else "failed"
        session.abort(f"the {role} {what}: {type(err).__name__}: {err} -- {REMEDY}")


def run_leader(config, communicator, ds_train, ds_eval, peer="follower"):
    """The leader's training: per step FORWARD -> the follower's scores, BACKWARD -> their gradients,
    DECISION (save at the end of each epoch); EVAL per evaluation batch; AUC per epoch."""
    leader = Leader(config)
    if config.resume:
        leader.load()
    train_size = ds_train.get_dataset_size()
    completed, evals, session = [0], 0, None
    try:
        session = _session(communicator, "leader", peer, completed, _settings(config, ds_train, ds_eval))
        for epoch in range(config.epochs):
            for step, item in enumerate(ds_train.create_dict_iterator(num_epochs=1), start=1):
                tag = completed[0] + 1
                reply = session.exchange(Kind.FORWARD, tag, {}, Kind.FORWARD_REPLY)
                loss, follower_scale = leader.train_step(item, reply.tensors())
                reply = session.exchange(Kind.BACKWARD, tag, follower_scale, Kind.BACKWARD_REPLY)
                session.agree(tag, GradientStats.of(), reply, save=step == train_size)
                completed[0] = tag
                log_step(config, epoch, step, train_size, loss)
            leader.save()
            for item in ds_eval.create_dict_iterator(num_epochs=1):
                evals += 1
                leader.eval_step(item, session.exchange(Kind.EVAL, evals, {}, Kind.EVAL_REPLY).tensors())
            logger.info("epoch %d auc: %f", epoch, leader.auc())
        session.finish()
    except BaseException as err:
        _stopping(session, "leader", err)
        raise


def _batches(dataset, epochs):
    """`next()` gives the dataset's batches in order, epoch after epoch (one iterator per epoch)."""
    def each():
        for _ in range(epochs):
            yield from dataset.create_dict_iterator(num_epochs=1)
    batches = each()
    return lambda _step: next(batches)


def run_follower(config, communicator, ds_train, ds_eval, peer="leader"):
    """The follower's training: FLModelFollower answers the leader's messages with its bottom network
    on its own batches (its scores out, their gradients in); it saves when the leader's DECISION says."""
    follower = Follower(config)
    if config.resume:
        follower.load()
    train_size = ds_train.get_dataset_size()
    handler = FLModelFollower(follower.bottom, checkpoint_dir=config.ckpt_path,
                              local_batch=_batches(ds_train, config.epochs),
                              local_eval_batch=_batches(ds_eval, config.epochs))
    completed, session = [0], None

    def on_step(done):
        completed[0] = done
        if done % train_size == 0:
            logger.info("epoch %d done", done // train_size - 1)
    try:
        session = _session(communicator, "follower", peer, completed, _settings(config, ds_train, ds_eval))
        FollowerLoop(session, handler).run(on_step=on_step)
    except BaseException as err:
        _stopping(session, "follower", err)
        raise


def _stop_on_sigterm(*_):
    raise SystemExit("stopped by SIGTERM")


def run_party(run, role, config, communicator, datasets):
    """A program's run_leader / run_follower: SIGTERM stops like an error (the peer is told why), a
    stop the protocol explains is one log line and exit status 1; the communicator is closed."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        run(config, communicator, *datasets)
    except (ProtocolError, PeerAborted, ConnectionError, TimeoutError) as err:
        unexplained = isinstance(err, (ConnectionError, TimeoutError)) and "--resume" not in str(err)
        hint = f" -- {REMEDY}" if unexplained else ""
        logger.error("%s stopped: %s%s", role, err, hint)
        return 1
    finally:
        communicator.close()
    return 0


def data_dirs(path):
    return os.path.join(path, "train"), os.path.join(path, "eval")
