"""Wide&Deep cut for two parties: a bottom network per party, the top network at the leader.

Each party's bottom network turns its own fields into a wide (linear) and a deep (MLP) score;
the leader's top network combines the four scores into the click logit.
"""
import mindspore as ms
import numpy as np
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Normal, Uniform, initializer
from mindspore.train import Metric

# Criteo's 39 fields (13 integer I1..I13, then 26 categorical C1..C26) split as in the original
# example: the leader holds fields 0-6 and 13-25 (and the label), the follower 7-12 and 26-38.
LEADER_FIELDS = list(range(7)) + list(range(13, 26))
FOLLOWER_FIELDS = list(range(7, 13)) + list(range(26, 39))


class WideDeepModel(nn.Cell):
    """Bottom network of one party: ``(id_hldr [B, F], wt_hldr [B, F]) -> (wide [B, 1], deep [B, 1])``."""

    def __init__(self, config, field_size):
        super().__init__()
        self.field_size, self.emb_dim = field_size, config.emb_dim
        high = max(abs(v) for v in config.init_args)  # uniform in [-high, high]
        self.wide_embedding = nn.Embedding(config.vocab_size, 1, embedding_table=Uniform(high))
        self.deep_embedding = nn.Embedding(config.vocab_size, config.emb_dim, embedding_table=Uniform(high))
        self.wide_b = Parameter(initializer("zeros", [1], ms.float32), name="wide_b")
        dims = [field_size * config.emb_dim] + list(config.deep_layer_dim)
        layers = []
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Dense(fan_in, fan_out, weight_init=Normal(0.05)), nn.ReLU()]
        layers.append(nn.Dense(dims[-1], 1, weight_init=Normal(0.05)))
        self.deep_dense = nn.SequentialCell(layers)

    def construct(self, id_hldr, wt_hldr):
        mask = ops.expand_dims(wt_hldr, -1)
        wide = (self.wide_embedding(id_hldr) * mask).sum(axis=1) + self.wide_b
        deep_in = (self.deep_embedding(id_hldr) * mask).reshape((-1, self.field_size * self.emb_dim))
        return wide.reshape((-1, 1)), self.deep_dense(deep_in)


class BottomLossNet(nn.Cell):
    """Bottom network plus its L2 penalty on the deep embedding (minimised locally)."""

    def __init__(self, net: WideDeepModel, config):
        super().__init__(auto_prefix=False)
        self.net = net
        self.l2_coef = config.l2_coef

    def construct(self, id_hldr, wt_hldr):
        wide, deep = self.net(id_hldr, wt_hldr)
        l2_regu = ops.square(self.net.deep_embedding.embedding_table).mean() / 2 * self.l2_coef
        return wide, deep, l2_regu


class LeaderTopNet(nn.Cell):
    """The leader's top network: one dense layer over the four scores."""

    def __init__(self, output_dim=1):
        super().__init__()
        self.dense_layer = nn.Dense(4, output_dim)

    def construct(self, leader_wide_embedding, leader_deep_embedding, follower_wide_embedding,
                  follower_deep_embedding):
        return self.dense_layer(ops.concat((leader_wide_embedding, leader_deep_embedding,
                                            follower_wide_embedding, follower_deep_embedding), axis=1))


class LeaderTopLossNet(nn.Cell):
    """Top network and the mean sigmoid cross-entropy: ``-> (logit, loss)``."""

    def __init__(self, net: LeaderTopNet):
        super().__init__()
        self.net = net
        self.loss = ops.SigmoidCrossEntropyWithLogits()

    def construct(self, leader_wide_embedding, leader_deep_embedding, follower_wide_embedding,
                  follower_deep_embedding, label):
        out = self.net(leader_wide_embedding, leader_deep_embedding, follower_wide_embedding, follower_deep_embedding)
        return out, self.loss(out, label).mean()


class LeaderTopEvalNet(nn.Cell):
    """Top network for evaluation: ``-> (logit, click probability)``."""

    def __init__(self, net: LeaderTopNet):
        super().__init__(auto_prefix=False)
        self.net = net

    def construct(self, leader_wide_embedding, leader_deep_embedding, follower_wide_embedding,
                  follower_deep_embedding):
        logits = self.net(leader_wide_embedding, leader_deep_embedding, follower_wide_embedding,
                          follower_deep_embedding)
        return logits, ops.sigmoid(logits)


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    labels = np.asarray(labels).ravel() > 0.5
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        raise ValueError("AUC needs both classes among the labels")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):  # average ranks over ties
        stop = start
        while stop + 1 < len(scores) and sorted_scores[stop + 1] == sorted_scores[start]:
            stop += 1
        ranks[order[start:stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


class AUCMetric(Metric):
    """AUC over everything ``update`` saw since ``clear``: update(logits, probabilities, labels)."""

    def __init__(self):
        super().__init__()
        self.true_labels, self.pred_probs = [], []

    def clear(self):
        self.true_labels, self.pred_probs = [], []

    def update(self, *inputs):
        self.pred_probs.extend(np.asarray(inputs[1].asnumpy() if hasattr(inputs[1], "asnumpy") else inputs[1]).ravel())
        self.true_labels.extend(np.asarray(inputs[2].asnumpy() if hasattr(inputs[2], "asnumpy") else inputs[2]).ravel())

    def eval(self):
        return roc_auc(self.true_labels, self.pred_probs)
