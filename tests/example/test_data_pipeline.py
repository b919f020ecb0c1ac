"""Default corpus -> preprocess.py -> MindRecord -> create_dataset, and prepare_data.py."""
import os
import re

import numpy as np
import pytest

from tests.example.data_helpers import paragraphs

SEQ = 17  # record length (model seq_length 16 + 1)



def _write_inputs(directory, n_files=3):
    """Text files whose paragraphs (blank-line separated) the test knows; returns {path: paragraphs}."""
    os.makedirs(directory, exist_ok=True)
    files = {}
    for f in range(n_files):
        pars = paragraphs(6 + 3 * f, offset=7 * f)
        path = os.path.join(directory, f"doc_{f}.txt")
        # varied separators: one blank line, several, whitespace-only lines, CRLF
        seps = ["\n\n", "\n\n\n", "\n  \n", "\r\n\r\n"]
        text = pars[0]
        for i, par in enumerate(pars[1:]):
            text += seps[i % len(seps)] + par
        with open(path, "w", encoding="utf-8", newline="") as fout:
            fout.write(text + "\n")
        files[path] = pars
    return files


def _expected_records(tok, files, eot, seq):
    """Independent re-implementation: ids per file with eot after each paragraph, cut, tail dropped."""
    records, tokens_in, dropped = [], 0, 0
    for path in sorted(files):
        ids = []
        for par in files[path]:
            ids += tok.encode(par) + [eot]
        n = len(ids) // seq
        records += [tuple(ids[i * seq:(i + 1) * seq]) for i in range(n)]
        tokens_in += len(ids)
        dropped += len(ids) - n * seq
    return records, tokens_in, dropped


def _read_back(shards, column="input_ids"):
    import mindspore.dataset as ds
    data = ds.MindDataset(shards, columns_list=[column], shuffle=False)
    rows = []
    for item in data.create_dict_iterator(output_numpy=True, num_epochs=1):
        assert item[column].dtype == np.int32
        rows.append(tuple(int(x) for x in item[column]))
    return rows


# ---- default corpus -------------------------------------------------------------------------------

def test_untag_line():
    from src.corpus import untag_line
    line = "19980101-01-001-001/m  迈向/v  [中央/n  电视台/n]nt  Windows/nx  ９５/m  ３．５％/m  ，/w  (/w"
    assert untag_line(line) == "迈向中央电视台Windows 95 3.5%，("


def test_default_corpus(tmp_path):
    from src.corpus import write_default_corpus
    train_dir, eval_dir = write_default_corpus(str(tmp_path / "c"), max_chars=40_000)
    for directory in (train_dir, eval_dir):
        names = sorted(os.listdir(directory))
        assert any(n.startswith("pd199801_") for n in names), names
        assert any(n.startswith("reviews_") for n in names), names
        for name in names:
            text = (tmp_path / "c" / os.path.basename(directory) / name).read_text(encoding="utf-8")
            assert text.strip(), name
            cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in text)
            assert cjk > 0.5 * len(text.replace("\n", "")), name
            assert "\n\n" in text or directory == eval_dir
            if name.startswith("pd199801_"):
                assert not re.search(r"[^\s/]/[A-Za-z]{1,4}(\s|$)", text), "POS tag left"
                assert "  " not in text
    total = sum(os.path.getsize(os.path.join(d, n)) for d in (train_dir, eval_dir)
                for n in os.listdir(d))
    assert 40_000 < total < 40_000 * 4  # capped (chars -> up to 3 UTF-8 bytes each)
    # deterministic
    again = write_default_corpus(str(tmp_path / "d"), max_chars=40_000)
    for a, b in zip((train_dir, eval_dir), again):
        assert sorted(os.listdir(a)) == sorted(os.listdir(b))
        for name in os.listdir(a):
            with open(os.path.join(a, name), "rb") as fa, open(os.path.join(b, name), "rb") as fb:
                assert fa.read() == fb.read()


# ---- preprocess -----------------------------------------------------------------------------------

def test_split_paragraphs_and_wiki_headings():
    from preprocess import split_paragraphs
    text = " = Title = \n\n第一段第一行\n第一段第二行\n\n = = Section = = \n第二段\r\n\r\n\n   \n第三段\n"
    assert split_paragraphs(text, "openwebtext") == [
        "= Title =", "第一段第一行\n第一段第二行", "= = Section = = \n第二段", "第三段"]
    assert split_paragraphs(text, "wiki") == ["第一段第一行\n第一段第二行", "第二段", "第三段"]
    with pytest.raises(ValueError, match="dataset_type"):
        split_paragraphs(text, "books")


@pytest.mark.parametrize("partitions,workers", [(1, 1), (2, 2)])
def test_preprocess_loses_no_token(tmp_path, tok, sp_model, partitions, workers):
    from preprocess import preprocess
    files = _write_inputs(str(tmp_path / "in"))
    expected, tokens_in, dropped = _expected_records(tok, files, eot=9, seq=SEQ)
    out = str(tmp_path / "mr" / "train.mindrecord")
    stats = preprocess(str(tmp_path / "in" / "*.txt"), out, sp_model, seq_length=SEQ,
                       file_partition=partitions, num_workers=workers)
    assert stats.files == 3
    assert stats.paragraphs == sum(len(p) for p in files.values())
    assert stats.tokens_in == tokens_in and stats.tokens_dropped == dropped
    assert stats.tokens_written == tokens_in - dropped == SEQ * len(expected)
    assert stats.records == len(expected) > partitions
    for path in stats.output_files:
        assert os.path.isfile(path) and os.path.isfile(path + ".db")
    rows = _read_back(list(stats.output_files))
    assert all(len(r) == SEQ for r in rows)
    assert sum(len(r) for r in rows) == stats.tokens_written
    assert sorted(rows) == sorted(expected)
    if partitions == 1:
        assert rows == expected  # one shard keeps file order
    # overwrite: a second run replaces the files instead of failing
    again = preprocess(str(tmp_path / "in" / "*.txt"), out, sp_model, seq_length=SEQ,
                       file_partition=partitions)
    assert again.records == stats.records


def test_preprocess_wiki_and_eot_and_column(tmp_path, tok, sp_model):
    from preprocess import preprocess
    pars = paragraphs(8)
    text = " = 标题 = \n\n" + "\n\n".join(pars[:4]) + "\n\n = = 小节 = = \n" + "\n\n".join(pars[4:])
    (tmp_path / "wiki.txt").write_text(text, encoding="utf-8")
    expected, _, _ = _expected_records(tok, {"w": pars}, eot=6, seq=SEQ)
    out = str(tmp_path / "wiki.mindrecord")
    stats = preprocess(str(tmp_path / "wiki.txt"), out, sp_model, seq_length=SEQ, eot=6,
                       dataset_type="wiki", data_column_name="tokens")
    assert stats.paragraphs == 8
    assert _read_back(out, column="tokens") == expected
    # openwebtext mode keeps the heading lines as text
    other = preprocess(str(tmp_path / "wiki.txt"), str(tmp_path / "owt.mindrecord"), sp_model,
                       seq_length=SEQ, eot=6)
    assert other.tokens_in > stats.tokens_in


def test_preprocess_errors_name_the_culprits(tmp_path, sp_model):
    from preprocess import main, preprocess
    out = str(tmp_path / "o.mindrecord")
    with pytest.raises(FileNotFoundError, match=r"nothing_here/\*\.txt"):
        preprocess(str(tmp_path / "nothing_here" / "*.txt"), out, sp_model)
    good = tmp_path / "good.txt"
    good.write_text("\n\n".join(paragraphs(12)), encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.txt"):
        preprocess(str(tmp_path / "*.txt"), out, sp_model, seq_length=SEQ)
    stats = preprocess(str(tmp_path / "*.txt"), out, sp_model, seq_length=SEQ, allow_empty=True)
    assert stats.files == 1
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 \xff\xfe".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt.*UTF-8"):
        preprocess(str(tmp_path / "*.txt"), out, sp_model, seq_length=SEQ, allow_empty=True)
    with pytest.raises(ValueError, match="--eot"):
        preprocess(str(good), out, sp_model, eot=10**6)
    with pytest.raises(ValueError, match="no record"):
        preprocess(str(good), out, sp_model, seq_length=100_000)
    assert main(["--input_glob", str(tmp_path / "none*.txt"), "--output_file", out,
                 "--vocab_model", sp_model]) == 2
    assert main(["--input_glob", str(good), "--output_file", out, "--vocab_model", sp_model,
                 "--seq_length", str(SEQ), "--no_progress"]) == 0


# ---- loader ---------------------------------------------------------------------------------------

def _write_records(path, rows, column="input_ids"):
    from mindspore.mindrecord import FileWriter
    os.makedirs(os.path.dirname(path), exist_ok=True)
    writer = FileWriter(path, shard_num=1, overwrite=True)
    writer.add_schema({column: {"type": "int32", "shape": [-1]}}, "test")
    writer.write_raw_data([{column: np.asarray(r, np.int32)} for r in rows])
    writer.commit()


def test_loader_eod_reset_matches_hand_expectation(tmp_path):
    from src.dataset import create_dataset
    record = [11, 12, 6, 13, 14, 6, 15, 16, 17]
    _write_records(str(tmp_path / "mr" / "x.mindrecord"), [record])
    batch = next(create_dataset(str(tmp_path / "mr"), batch_size=1, shuffle=False)
                 .create_dict_iterator(output_numpy=True, num_epochs=1))
    assert batch["input_ids"].tolist() == [record]
    assert batch["position_id"].tolist() == [[0, 1, 2, 0, 1, 2, 0, 1]]
    expected_mask = np.array([
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],
        [0, 0, 0, 1, 0, 0, 0, 0],
        [0, 0, 0, 1, 1, 0, 0, 0],
        [0, 0, 0, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 1, 1],
    ], dtype=np.float32)
    assert batch["attention_mask"].dtype == np.float32
    np.testing.assert_array_equal(batch["attention_mask"][0], expected_mask)
    # without reset: plain causal
    plain = next(create_dataset(str(tmp_path / "mr" / "x.mindrecord"), batch_size=1, shuffle=False,
                                eod_reset=False).create_dict_iterator(output_numpy=True, num_epochs=1))
    assert plain["position_id"].tolist() == [list(range(8))]
    np.testing.assert_array_equal(plain["attention_mask"][0], np.tril(np.ones((8, 8), np.float32)))


def test_loader_batches_shapes_and_determinism(tmp_path, sp_model):
    from preprocess import preprocess
    from src.dataset import create_dataset
    _write_inputs(str(tmp_path / "in"))
    stats = preprocess(str(tmp_path / "in" / "*.txt"), str(tmp_path / "mr" / "d.mindrecord"),
                       sp_model, seq_length=SEQ, file_partition=2, eot=6,
                       data_column_name="ids")
    batch_size = 3
    data = create_dataset(str(tmp_path / "mr"), batch_size, column_name="ids", seed=5)
    assert data.get_dataset_size() == stats.records // batch_size
    batches = list(data.create_dict_iterator(output_numpy=True, num_epochs=1))
    for b in batches:
        assert b["input_ids"].shape == (batch_size, SEQ) and b["input_ids"].dtype == np.int32
        assert b["position_id"].shape == (batch_size, SEQ - 1) and b["position_id"].dtype == np.int32
        assert b["attention_mask"].shape == (batch_size, SEQ - 1, SEQ - 1)
        assert b["attention_mask"].dtype == np.float32
    order = [b["input_ids"].tolist() for b in batches]
    again = [b["input_ids"].tolist() for b in create_dataset(
        str(tmp_path / "mr"), batch_size, column_name="ids", seed=5)
        .create_dict_iterator(output_numpy=True, num_epochs=1)]
    assert order == again
    keep = create_dataset(str(tmp_path / "mr"), batch_size, column_name="ids", shuffle=False,
                          drop_remainder=False)
    assert sum(b["input_ids"].shape[0] for b in keep.create_dict_iterator(
        output_numpy=True, num_epochs=1)) == stats.records
    half = create_dataset(str(tmp_path / "mr"), 1, column_name="ids", shuffle=False,
                          num_shards=2, shard_id=0)
    assert half.get_dataset_size() == (stats.records + 1) // 2


def test_loader_missing_data_is_named(tmp_path):
    from src.dataset import create_dataset
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        create_dataset(str(tmp_path / "no_such_dir"), 2)
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "empty_dir" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="empty_dir"):
        create_dataset(str(tmp_path / "empty_dir"), 2)


# ---- prepare_data ---------------------------------------------------------------------------------

def test_prepare_is_idempotent(tmp_path, capsys):
    from prepare_data import prepare
    from src.dataset import create_dataset
    from src.tokenizer import JIEBATokenizer
    paths = prepare(str(tmp_path / "data"), seq_length=33, vocab_size=2000, max_chars=12_000,
                    num_workers=1)
    first = capsys.readouterr().out
    assert "skipped" not in first
    tok = JIEBATokenizer(paths["vocab_model"])
    assert (paths["eod_id"], paths["eot_id"], paths["vocab_size"]) == (6, 9, tok.vocab_size)
    ids = np.concatenate([b["input_ids"] for b in create_dataset(paths["train_data"], 2)
                          .create_dict_iterator(output_numpy=True, num_epochs=1)])
    assert ids.shape[1] == 33 and len(ids) > 10
    assert (ids == 6).any()  # documents are separated by EOD (see preprocess.py)
    assert not (ids == 9).any()
    assert paths["eval_data"] and os.listdir(paths["eval_data"])
    mtimes = {p: os.path.getmtime(p) for p in (paths["vocab_model"],)}
    again = prepare(str(tmp_path / "data"), seq_length=33, vocab_size=2000, max_chars=12_000,
                    num_workers=1)
    second = capsys.readouterr().out
    assert second.count("skipped") == 4, second
    assert again == paths
    assert {p: os.path.getmtime(p) for p in mtimes} == mtimes
    # a changed record length rebuilds only the records
    prepare(str(tmp_path / "data"), seq_length=17, vocab_size=2000, max_chars=12_000, num_workers=1)
    third = capsys.readouterr().out
    assert third.count("skipped") == 2 and "records (train): preprocessing" in third
