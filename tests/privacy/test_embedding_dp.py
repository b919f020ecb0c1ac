"""EmbeddingDP (SPEC §2.6): 1-bit quantisation, randomised response rates, compatibility check."""
import math

import mindspore_federated  # noqa: F401
import mindspore as ms
import numpy as np
import pytest
from scipy import stats

from mindspore_federated import CompressConfig
from mindspore_federated.privacy import EmbeddingDP, check_compatible

N = 40000


def test_no_eps_is_exact_one_bit_quantisation():
    x = np.array([[-2.0, -0.0, 0.0, 1e-30, 3.0], [np.inf, -np.inf, 0.5, -0.5, 7.0]], np.float32)
    out = EmbeddingDP()(x)
    np.testing.assert_array_equal(out, (x > 0).astype(np.float32))
    assert out.dtype == np.float32
    for dtype in (ms.float16, ms.float32, ms.bfloat16):
        t = ms.Tensor(np.random.default_rng(0).standard_normal((2, 3, 4)), dtype=dtype)
        res = EmbeddingDP(seed=1)(t)
        assert isinstance(res, ms.Tensor) and res.dtype == dtype and res.shape == (2, 3, 4)
        np.testing.assert_array_equal(res.asnumpy().astype(np.float32),
                                      (t.asnumpy().astype(np.float32) > 0).astype(np.float32))


@pytest.mark.parametrize("eps", [0.5, 1.0, 3.0])
def test_flip_rates(eps):
    x = np.random.default_rng(5).standard_normal(N).astype(np.float32)
    ones = x > 0
    out = EmbeddingDP(eps, seed=21)(x)
    assert set(np.unique(out)) <= {0.0, 1.0}
    q = 1 / (math.exp(eps / 2) + 1)
    stay = int((out[ones] == 1).sum())
    rise = int((out[~ones] == 1).sum())
    n1, n0 = int(ones.sum()), int((~ones).sum())
    observed = [stay, n1 - stay, rise, n0 - rise]
    expected = [n1 * (1 - q), n1 * q, n0 * q, n0 * (1 - q)]
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    wrong = 1 / (math.exp(eps) + 1)  # power: eps instead of eps/2 is rejected
    wrong_expected = [n1 * (1 - wrong), n1 * wrong, n0 * wrong, n0 * (1 - wrong)]
    assert stats.chisquare(observed, wrong_expected).pvalue < 1e-6


def test_eps_zero_is_a_coin_and_seed_reproducible():
    x = np.random.default_rng(0).standard_normal((200, 50))
    out = EmbeddingDP(0.0, seed=4)(x)
    assert out.dtype == np.float64
    assert stats.binomtest(int(out.sum()), out.size, 0.5).pvalue > 1e-3
    np.testing.assert_array_equal(out, EmbeddingDP(0.0, seed=4)(x))
    assert EmbeddingDP(1e6).flip_probability == 0.0
    np.testing.assert_array_equal(EmbeddingDP(float("inf"), seed=0)(x), (x > 0).astype(np.float64))


def test_validation():
    with pytest.raises(ValueError, match="eps must be >= 0"):
        EmbeddingDP(-1)
    with pytest.raises(TypeError, match="float"):
        EmbeddingDP()(np.arange(4))
    with pytest.raises(TypeError, match="Tensor or numpy"):
        EmbeddingDP()([1.0])


def test_check_compatible():
    for config in (CompressConfig("min_max", 6), {"compress_type": "min_max", "bit_num": 6}, "min_max"):
        with pytest.raises(ValueError, match="'embedding_table'.*EmbeddingDP and min_max.*bit_pack"):
            check_compatible("embedding_table", True, config)
    check_compatible("embedding_table", False, CompressConfig("min_max", 6))
    for config in (None, CompressConfig("bit_pack", 1), CompressConfig("fp16"), {"compress_type": "bf16"}):
        check_compatible("embedding_table", True, config)


def test_embedding_dp_output_bit_packs_to_one_bit():
    """The suggested pairing: EmbeddingDP output travels losslessly at 1 bit per value."""
    from mindspore_federated.communication import codec
    x = np.random.default_rng(0).standard_normal((16, 256)).astype(np.float32)
    bits = EmbeddingDP(1.0, seed=0)(x)
    data = codec.dumps({"e": bits}, compress_configs={"e": CompressConfig("bit_pack", 1)})
    np.testing.assert_array_equal(codec.loads(data, as_numpy=True)["e"], bits)
    assert len(data) < bits.nbytes / 25  # 32x on the payload, minus the header
