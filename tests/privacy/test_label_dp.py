"""LabelDP (SPEC §2.6): randomized response rates, formats and validation.

Rates are checked with a chi-square goodness-of-fit test (fixed seeds, so deterministic); each
test also checks that a plausible wrong formula would be rejected, so the test has power.
"""
import math

import mindspore_federated  # noqa: F401
import mindspore as ms
import numpy as np
import pytest
from scipy import stats

from mindspore_federated.privacy import LabelDP

N = 20000


def _keep(eps, classes):
    return math.exp(eps) / (math.exp(eps) + classes - 1)


@pytest.mark.parametrize("eps", [0.0, 0.5, 1.0, 3.0])
def test_binary_flip_rate(eps):
    labels = np.random.default_rng(1).integers(0, 2, N).astype(np.int32)
    noisy = LabelDP(eps, seed=11)(labels)
    kept = int((noisy == labels).sum())
    observed = [kept, N - kept]
    p = _keep(eps, 2)
    assert stats.chisquare(observed, [N * p, N * (1 - p)]).pvalue > 1e-3
    if eps > 0:  # power: keeping with e^eps/(e^eps + 2) is rejected
        wrong = math.exp(eps) / (math.exp(eps) + 2)
        assert stats.chisquare(observed, [N * wrong, N * (1 - wrong)]).pvalue < 1e-6


@pytest.mark.parametrize("eps", [0.0, 0.5, 1.0, 3.0])
def test_one_hot_four_classes(eps):
    classes = 4
    truth = np.random.default_rng(2).integers(0, classes, N)
    labels = np.eye(classes, dtype=np.float32)[truth]
    noisy = LabelDP(eps, seed=12)(labels)
    assert noisy.shape == labels.shape and noisy.dtype == labels.dtype
    assert np.all(noisy.sum(axis=1) == 1) and set(np.unique(noisy)) <= {0.0, 1.0}
    out = noisy.argmax(axis=1)
    p = _keep(eps, classes)
    # joint (true class, output class) counts against keep p on the diagonal, (1-p)/3 elsewhere
    table = np.zeros((classes, classes))
    np.add.at(table, (truth, out), 1)
    per_class = np.bincount(truth, minlength=classes)[:, None]
    expected = per_class * np.where(np.eye(classes, dtype=bool), p, (1 - p) / (classes - 1))
    assert stats.chisquare(table.ravel(), expected.ravel()).pvalue > 1e-3
    if eps > 0:  # power: the binary formula applied to 4 classes is rejected
        wrong = _keep(eps, 2)
        bad = per_class * np.where(np.eye(classes, dtype=bool), wrong, (1 - wrong) / (classes - 1))
        assert stats.chisquare(table.ravel(), bad.ravel()).pvalue < 1e-6


def test_shapes_dtypes_and_types():
    dp = LabelDP(1.0, seed=0)
    for labels in (np.array([0, 1, 1, 0], np.int64), np.array([[1], [0]], np.float32),
                   np.array([True, False, True]), np.eye(3, dtype=np.int32)):
        out = dp(labels)
        assert isinstance(out, np.ndarray) and out.dtype == labels.dtype and out.shape == labels.shape
    tensor = ms.Tensor(np.eye(5, dtype=np.float32)[[0, 4, 2]])
    out = dp(tensor)
    assert isinstance(out, ms.Tensor) and out.dtype == ms.float32 and out.shape == (3, 5)
    binary = dp(ms.Tensor(np.array([[0], [1], [1]], np.int32)))
    assert isinstance(binary, ms.Tensor) and binary.dtype == ms.int32 and binary.shape == (3, 1)
    bf16 = dp(ms.Tensor(np.eye(3, dtype=np.float32)[[0, 1, 2, 2]], ms.bfloat16))
    assert bf16.dtype == ms.bfloat16 and bf16.shape == (4, 3)
    assert dp(np.zeros(0, np.int32)).shape == (0,)


def test_seed_reproducible_and_infinite_eps_is_identity():
    labels = np.eye(4, dtype=np.float32)[np.random.default_rng(0).integers(0, 4, 500)]
    a = LabelDP(0.5, seed=3)(labels)
    b = LabelDP(0.5, seed=np.random.default_rng(3))(labels)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(LabelDP(float("inf"), seed=0)(labels), labels)


def test_validation():
    with pytest.raises(ValueError, match="eps must be >= 0"):
        LabelDP(-0.1)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        LabelDP(float("nan"))
    with pytest.raises(TypeError, match="eps"):
        LabelDP("1")
    dp = LabelDP(1.0)
    with pytest.raises(ValueError, match="must be 0/1, found 2"):
        dp(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="one-hot.*row 1"):
        dp(np.array([[1, 0, 0], [1, 1, 0]]))
    with pytest.raises(ValueError, match="one-hot.*row 0"):
        dp(np.array([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="shape"):
        dp(np.zeros((2, 2, 2)))
    with pytest.raises(TypeError, match="Tensor or numpy"):
        dp([0, 1])
