"""PanGu-alpha model: layout and parameter count, init, EOD mask, numpy reference, split composition."""
import math

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn

from src.pangu_alpha_config import PRESETS, get_config
from src.pangu_alpha import (MaskedCrossEntropy, PanguAlphaBackbone, PanguAlphaHead, PanguAlphaModel,
                             PanguAlphaWithLoss, copy_parameters_by_name, count_parameters, lazy_parameters,
                             parameter_shapes, parameters_to_numpy, split_input_ids)
from src.utils import get_position_and_mask


@pytest.fixture(autouse=True)
def _pynative():
    old = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    yield
    ms.set_context(mode=old)


def formula(v, s, h, layers, f):
    """SPEC §3: V·H + 2·S·H + L·(4H² + 4H + 2HF + F + 5H) + 2H."""
    return v * h + 2 * s * h + layers * (4 * h * h + 4 * h + 2 * h * f + f + 5 * h) + 2 * h


def batch_of(ids):
    pos, mask = get_position_and_mask(ids, 6)
    return Tensor(ids.astype(np.int32)), Tensor(pos), Tensor(mask)


# ------------------------------------------------------------------------------------------ layout
@pytest.mark.parametrize("name", list(PRESETS))
def test_parameter_count_of_every_preset(name):
    cfg = get_config(name)
    expected = formula(cfg.vocab_size, cfg.seq_length, cfg.hidden_size, cfg.num_layers, cfg.ffn_hidden_size)
    with lazy_parameters():  # shapes only: the 200B model is built without allocating its weights
        net = PanguAlphaWithLoss(cfg)
    assert count_parameters(net) == expected
    layout = {p.name: tuple(p.shape) for p in net.trainable_params()}
    assert layout == dict(parameter_shapes(cfg))
    assert sum(int(np.prod(s)) for s in parameter_shapes(cfg).values()) == expected


def test_table_values_of_presets():
    rows = {"350M": (16, 1280, 32, 5120), "2.6B": (32, 2560, 32, 10240), "13B": (40, 5120, 40, 20480),
            "200B": (64, 16384, 128, 65536)}
    for name, (layers, hidden, heads, ffn) in rows.items():
        c = get_config(name)
        assert (c.num_layers, c.hidden_size, c.num_heads, c.ffn_hidden_size) == (layers, hidden, heads, ffn)
        assert (c.vocab_size, c.seq_length, c.eod_id, c.pad_id, c.eot_id) == (40000, 1024, 6, 6, 9)
    assert abs(formula(40000, 1024, 1280, 16, 5120) / 1e6 - 368.7) < 0.1


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_instantiated_names_and_count(name):
    cfg = get_config(name, vocab_size=1000)
    net = PanguAlphaWithLoss(cfg)
    names = [p.name for p in net.trainable_params()]
    assert "backbone.embedding.word_embedding.embedding_table" in names
    assert "backbone.embedding.position_embedding.embedding_table" in names
    assert "backbone.blocks.0.attention.dense1.weight" in names
    assert "backbone.top_query_layer.output.mapping.weight" in names
    assert f"backbone.blocks.{cfg.num_layers - 2}.layernorm2.gamma" in names
    assert f"backbone.blocks.{cfg.num_layers - 1}.layernorm2.gamma" not in names
    assert count_parameters(net) == formula(1000, cfg.seq_length, cfg.hidden_size, cfg.num_layers,
                                            cfg.ffn_hidden_size)


def test_config_overrides_and_validation():
    c = get_config("tiny", vocab_size=500, seq_length=None)
    assert c.vocab_size == 500 and c.seq_length == 32
    with pytest.raises(ValueError, match="num_heads"):
        get_config("tiny", num_heads=5)
    with pytest.raises(ValueError, match="unknown"):
        get_config("1T")
    with pytest.raises(TypeError):
        get_config("tiny", hiden_size=3)


# ----------------------------------------------------------------------------------- init / loss
def test_first_loss_is_ln_v_with_small_init():
    cfg = get_config("tiny", param_init_std=1e-4)
    assert cfg.vocab_size == 40000
    net = PanguAlphaWithLoss(cfg)
    net.set_train(False)
    ids = np.random.RandomState(0).randint(10, cfg.vocab_size, (2, cfg.seq_length + 1))
    loss = float(net(*batch_of(ids)).asnumpy())
    assert abs(loss - math.log(cfg.vocab_size)) / math.log(cfg.vocab_size) < 0.02


def test_init_depends_on_seed_and_name_only():
    cfg = get_config("tiny", vocab_size=200)
    a = parameters_to_numpy(PanguAlphaWithLoss(cfg))
    b = parameters_to_numpy(PanguAlphaWithLoss(cfg))
    c = parameters_to_numpy(PanguAlphaWithLoss(cfg.replace(param_init_seed=2)))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    w = "backbone.blocks.0.attention.dense1.weight"
    assert not np.array_equal(a[w], c[w])
    assert not np.array_equal(a[w], a["backbone.blocks.1.attention.dense1.weight"])
    np.testing.assert_array_equal(a["backbone.blocks.0.layernorm1.gamma"], np.ones(64, np.float32))
    assert abs(a[w].std() - 0.02) < 0.003


# ------------------------------------------------------------------------------------ EOD example
def test_eod_worked_example():
    ids = np.array([11, 12, 6, 13, 14, 6, 15, 16, 17])
    pos, mask = get_position_and_mask(ids, eod_id=6)
    assert pos.dtype == np.int32 and mask.dtype == np.float32
    assert pos.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    expected = np.zeros((8, 8), np.float32)
    for lo, hi in ((0, 3), (3, 6), (6, 8)):
        expected[lo:hi, lo:hi] = np.tril(np.ones((hi - lo, hi - lo)))
    np.testing.assert_array_equal(mask, expected)
    tokens, labels, input_mask = split_input_ids(Tensor(ids[None].astype(np.int32)), 6)
    assert labels.asnumpy()[0].tolist() == [12, 6, 13, 14, 6, 15, 16, 17]
    assert tokens.asnumpy()[0].tolist() == [11, 12, 6, 13, 14, 6, 15, 16]
    assert input_mask.asnumpy()[0].tolist() == [1, 1, 0, 1, 1, 0, 1, 1]
    # batched form gives the same rows; wrong length is refused
    pos2, mask2 = get_position_and_mask(np.stack([ids, ids]), 6, seq_length=8)
    assert pos2.shape == (2, 8) and mask2.shape == (2, 8, 8)
    np.testing.assert_array_equal(mask2[1], expected)
    with pytest.raises(ValueError, match="seq_length"):
        get_position_and_mask(ids, 6, seq_length=9)


# ------------------------------------------------------------------------------ numpy reference
def _ln(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


_erf = np.vectorize(math.erf)


def _np_block(x, q_in, bias, p, pre, heads):
    """Pre-LN block; q_in None means queries from LN1(x) (ordinary block), else the query layer."""
    lin = lambda t, n: t @ p[pre + n + ".weight"].T + p[pre + n + ".bias"]  # noqa: E731
    h = _ln(x, p[pre + "layernorm1.gamma"], p[pre + "layernorm1.beta"])
    q_src = h if q_in is None else q_in
    bsz, s, hid = x.shape
    d = hid // heads
    split = lambda t: t.reshape(bsz, s, heads, d).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = split(lin(q_src, "attention.dense1")), split(lin(h, "attention.dense2")), split(lin(h, "attention.dense3"))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + bias
    scores = scores - scores.max(-1, keepdims=True)
    probs = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(bsz, s, hid)
    x = x + lin(ctx, "attention.projection")
    m = lin(_ln(x, p[pre + "layernorm2.gamma"], p[pre + "layernorm2.beta"]), "output.mapping")
    m = 0.5 * m * (1.0 + _erf(m / math.sqrt(2.0)))
    return x + lin(m, "output.projection")


def numpy_pangu(params, ids, pos, mask, cfg):
    """Independent float64 forward of PanGu-alpha (SPEC §3) -> (logits [B*S,V], loss)."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    tokens, labels = ids[:, :-1], ids[:, 1:]
    table = p["backbone.embedding.word_embedding.embedding_table"]
    x = table[tokens] + p["backbone.embedding.position_embedding.embedding_table"][pos]
    bias = ((1.0 - mask) * -10000.0)[:, None]
    for i in range(cfg.num_layers - 1):
        x = _np_block(x, None, bias, p, f"backbone.blocks.{i}.", cfg.num_heads)
    x = _ln(x, p["backbone.layernorm.gamma"], p["backbone.layernorm.beta"])
    query = p["backbone.top_query_embedding.embedding_table"][pos]
    x = _np_block(x, query, bias, p, "backbone.top_query_layer.", cfg.num_heads)
    logits = x.reshape(-1, cfg.hidden_size) @ table.T
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    nll = -logp[np.arange(logp.shape[0]), labels.reshape(-1)]
    w = (tokens != cfg.eod_id).reshape(-1).astype(np.float64)
    return logits, (nll * w).sum() / (w.sum() + 1e-5)


def _ref_config():
    # 2 layers = 1 block + the query layer; a large init so every sub-layer matters
    return get_config("tiny", num_layers=2, vocab_size=97, seq_length=16, dropout_rate=0.0, param_init_std=0.3)


def _ref_batch(cfg):
    rng = np.random.RandomState(3)
    ids = rng.randint(10, cfg.vocab_size, (3, cfg.seq_length + 1))
    ids[0, [4, 9]] = 6
    ids[1, 1] = 6
    ids[2, 15] = 6
    return ids


def test_whole_model_matches_numpy_reference():
    cfg = _ref_config()
    ids = _ref_batch(cfg)
    pos, mask = get_position_and_mask(ids, cfg.eod_id)
    model = PanguAlphaModel(cfg)
    model.set_train(False)
    logits = model(Tensor(ids[:, :-1].astype(np.int32)), Tensor(pos), Tensor(mask)).asnumpy()
    ref_logits, ref_loss = numpy_pangu(parameters_to_numpy(model), ids, pos, mask, cfg)
    assert np.abs(ref_logits).max() > 1.0  # non-trivial network output
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4)
    wl = PanguAlphaWithLoss(cfg)
    wl.set_train(False)
    loss = float(wl(*batch_of(ids)).asnumpy())
    assert abs(loss - ref_loss) / ref_loss < 1e-5


class _Part(nn.Cell):
    """What a split party does: keep the part under the attribute `backbone` (canonical names)."""

    def __init__(self, cfg, parts):
        super().__init__()
        self.backbone = PanguAlphaBackbone(cfg, parts)


def test_separately_built_parts_compose_to_the_whole_model():
    cfg = _ref_config().replace(num_layers=3)
    ids = _ref_batch(cfg)
    inputs = batch_of(ids)
    whole = PanguAlphaWithLoss(cfg)
    whole.set_train(False)
    whole_loss = float(whole(*inputs).asnumpy())

    emb, blocks, top = _Part(cfg, ["embedding"]), _Part(cfg, ["blocks"]), _Part(cfg, ["top"])
    for part in (emb, blocks, top):
        part.set_train(False)
    # built alone, each part has the whole model's names and initial values
    whole_params = parameters_to_numpy(whole)
    part_params = {}
    for part in (emb, blocks, top):
        part_params.update(parameters_to_numpy(part))
    assert set(part_params) == set(whole_params)
    for k, v in part_params.items():
        np.testing.assert_array_equal(v, whole_params[k], err_msg=k)

    input_ids, position_id, attention_mask = inputs
    tokens, labels, input_mask = split_input_ids(input_ids, cfg.eod_id)
    embedding, word_table = emb.backbone.embed(tokens, position_id)
    hidden = blocks.backbone.run_blocks(embedding, attention_mask)
    out = top.backbone.run_top(hidden, position_id, attention_mask)
    logits = PanguAlphaHead(cfg)(out, word_table)
    loss = float(MaskedCrossEntropy()(logits, labels, input_mask).asnumpy())
    assert abs(loss - whole_loss) <= 1e-6 * whole_loss
    _, ref_loss = numpy_pangu(whole_params, ids, position_id.asnumpy(), attention_mask.asnumpy(), cfg)
    assert abs(loss - ref_loss) / ref_loss < 1e-5


def test_copy_parameters_by_name():
    cfg = get_config("tiny", vocab_size=100, num_layers=2)
    src = PanguAlphaWithLoss(cfg.replace(param_init_seed=5))
    dst = _Part(cfg, ["blocks"])
    copied = copy_parameters_by_name(src, dst, strict=True)
    assert copied and all(n.startswith("backbone.blocks.0.") for n in copied)
    s, d = parameters_to_numpy(src), parameters_to_numpy(dst)
    for k in d:
        np.testing.assert_array_equal(d[k], s[k])
    with pytest.raises(KeyError):
        copy_parameters_by_name(_Part(cfg, ["embedding"]), dst, strict=True)


def test_fp16_compute_switch_runs_close_to_fp32():
    cfg = _ref_config()
    ids = _ref_batch(cfg)
    inputs = batch_of(ids)
    losses = []
    for dtype in ("float32", "float16"):
        net = PanguAlphaWithLoss(cfg.replace(compute_dtype=dtype))
        net.set_train(False)
        losses.append(float(net(*inputs).asnumpy()))
    assert all(p.dtype == ms.float32 for p in net.trainable_params())
    assert abs(losses[0] - losses[1]) / losses[0] < 2e-2
