"""Shared helpers of the PanGu-alpha data-pipeline tests: a tiny corpus and a SentencePiece model."""
from __future__ import annotations

import os
from typing import List

SENTENCES: List[str] = [
    "今天天气很好，我们一起去公园散步。",
    "中国人民决心继续推进改革开放和现代化建设。",
    "这本书的内容非常丰富，值得一读再读。",
    "新华社北京12月31日电 国家主席发表新年讲话。",
    "我买了 Windows 95 和 Office 97，价格是 3.5% 的折扣。",
    "农业生产再次获得好的收成，企业改革继续深化。",
    "他说：“明年我们要继续做好发展中国家的工作。”",
    "服务态度很差，房间也不干净，下次不会再来了！",
    "The quick brown fox jumps over the lazy dog 2024 次。",
    "人工智能和机器学习正在改变我们的生活方式。",
    "北京、上海、广州和深圳都是中国的大城市。",
    "春节期间，各地举行了丰富多彩的庆祝活动。",
]


def paragraphs(n: int, offset: int = 0) -> List[str]:
    """n deterministic paragraphs of 1-3 sentences, some with an inner newline."""
    out = []
    for i in range(n):
        k = offset + i
        parts = [SENTENCES[(k * 5 + j) % len(SENTENCES)] for j in range(1 + k % 3)]
        sep = "\n" if k % 4 == 1 else ""
        out.append(sep.join(parts))
    return out


def write_training_text(directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "sp_train.txt")
    with open(path, "w", encoding="utf-8") as fout:
        for _ in range(3):
            fout.write("\n".join(SENTENCES) + "\n")
        fout.write("\n".join(paragraphs(40)) + "\n")
    return path


def train_small_model(directory: str) -> str:
    """A small SentencePiece model (trained in ~1 s) with the PanGu special ids."""
    from src.tokenizer import train_sentencepiece  # pylint: disable=import-outside-toplevel
    text = write_training_text(directory)
    return train_sentencepiece([text], os.path.join(directory, "sp"), vocab_size=600)
