"""JIEBATokenizer and the SentencePiece trainer of the PanGu-alpha example."""
import pytest


def test_special_ids_in_pangu_places(tok):
    assert (tok.eod_id, tok.pad_id, tok.eot_id) == (6, 6, 9)
    assert tok.sp.pad_id() == 6
    assert tok.sp.unk_id() == 0 and tok.sp.bos_id() == 1 and tok.sp.eos_id() == 2
    pieces = [tok.sp.id_to_piece(i) for i in range(12)]
    assert pieces[6] == "<eod>" and pieces[9] == "<eot>"
    assert pieces[10:12] == ["\u2582", "\u2583"]
    for special in (6, 9):
        assert tok.sp.is_control(special)
    # control ids never come out of text and decode to nothing
    assert tok.decode([6, 9] + tok.encode("你好") + [6]) == "你好"


@pytest.mark.parametrize("text", [
    "今天天气很好，我们一起去公园散步。",
    "中文 与 spaces  两个空格\n换行\n\n空行 end ",
    "Windows 95 和 3.5% 的折扣；ＡＢＣ１２３ 全角",
    "  leading spaces and trailing\n",
    "没见过的字：龘靐齉 ☃ 𝄞 and tab\there",
    "",
])
def test_round_trip_is_exact(tok, text):
    ids = tok.encode(text)
    assert all(isinstance(i, int) for i in ids)
    assert tok.decode(ids) == text


def test_encode_follows_the_pangu_recipe(tok):
    import jieba
    from src.tokenizer import post_detokenize, pre_tokenize
    text = "我们 去 Windows 95\n吧"
    words = jieba.lcut(text)
    expected = " ".join(w.replace(" ", "\u2582").replace("\n", "\u2583") for w in words)
    assert pre_tokenize(text) == expected
    assert post_detokenize(expected) == text
    assert tok.encode(text) == tok.sp.encode(expected, out_type=int)
    assert "\u2582" in tok.tokenize(text) and "\u2583" in tok.tokenize(text)
    assert tok.convert_tokens_to_ids(tok.tokenize(text)) == tok.encode(text)


def test_decode_accepts_numpy(tok):
    import numpy as np
    ids = tok.encode("春节期间")
    assert tok.decode(np.asarray(ids, dtype=np.int32)) == "春节期间"


def test_bad_model_paths_are_named(tmp_path):
    from src.tokenizer import JIEBATokenizer
    missing = tmp_path / "nope.model"
    with pytest.raises(FileNotFoundError, match="nope.model"):
        JIEBATokenizer(str(missing))
    bogus = tmp_path / "bogus.model"
    bogus.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bogus.model"):
        JIEBATokenizer(str(bogus))


def test_trainer_rejects_bad_arguments(tmp_path):
    from src.tokenizer import train_sentencepiece
    with pytest.raises(ValueError, match="vocab_size"):
        train_sentencepiece([str(tmp_path / "x.txt")], str(tmp_path / "m"), vocab_size=100)
    with pytest.raises(FileNotFoundError, match="x.txt"):
        train_sentencepiece([str(tmp_path / "x.txt")], str(tmp_path / "m"), vocab_size=1000)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        train_sentencepiece([str(empty)], str(tmp_path / "m"), vocab_size=1000)


def test_cli_encode_decode(sp_model, capsys):
    from src.tokenizer import main
    assert main(["encode", "--vocab_model", sp_model, "--text", "今天天气很好"]) == 0
    ids = capsys.readouterr().out.strip()
    assert main(["decode", "--vocab_model", sp_model, "--ids", ids.replace(" ", ",")]) == 0
    assert capsys.readouterr().out.strip() == "今天天气很好"
