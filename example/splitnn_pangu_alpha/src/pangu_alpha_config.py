"""PanGu-alpha model configuration and named presets (SPEC §3).

One dataclass carries the architecture, the numeric policy and the training-recipe defaults, so
that the centralised trainer and both parties of the split example build the same network from one
name plus a few overrides (e.g. a smaller vocabulary for the SentencePiece model trained on the
embedded corpus).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict

__all__ = ["PanguAlphaConfig", "PRESETS", "get_config", "preset_names"]


@dataclass
class PanguAlphaConfig:
    """Architecture + numerics + recipe defaults of one PanGu-alpha model.

    `num_layers` counts the final query layer, so the backbone has `num_layers - 1` ordinary blocks.
    Parameters are always fp32; `compute_dtype` is the dtype of the matmul inputs ("float16" on
    accelerators, "float32" on CPU); LayerNorm, softmax (`softmax_dtype`) and the loss stay fp32.
    `data_parallel` / `model_parallel` are informational on CPU (kept for checkpoint/launch parity).
    """

    vocab_size: int = 40000
    seq_length: int = 1024
    hidden_size: int = 1280
    num_heads: int = 32
    num_layers: int = 16
    ffn_hidden_size: int = 5120
    dropout_rate: float = 0.1
    compute_dtype: str = "float32"
    softmax_dtype: str = "float32"
    hidden_act: str = "gelu"          # "gelu" (exact, erf), "gelu_tanh" (tanh approx.), "fast_gelu" (Ascend)
    layernorm_eps: float = 1e-5
    eod_id: int = 6
    pad_id: int = 6
    eot_id: int = 9
    batch_size: int = 2
    data_parallel: int = 1
    model_parallel: int = 1
    param_init_std: float = 0.02
    param_init_seed: int = 1
    # training-recipe defaults (SPEC §3 "Training")
    start_lr: float = 1e-4
    end_lr: float = 1e-6
    warmup_steps: int = 2000
    weight_decay: float = 0.1
    loss_scale: float = 2.0 ** 32
    loss_scale_window: int = 1000
    clip_norm: float = 1.0
    # execution: in PyNative mode compile each (sub-)network's forward with mindspore.jit
    jit_forward: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Reject impossible shapes early, with the field named."""
        for field in ("vocab_size", "seq_length", "hidden_size", "num_heads", "ffn_hidden_size", "batch_size"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"PanguAlphaConfig.{field} must be >= 1, got {getattr(self, field)}")
        if self.num_layers < 2:
            raise ValueError(f"PanguAlphaConfig.num_layers counts the query layer and must be >= 2, got {self.num_layers}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"PanguAlphaConfig.hidden_size ({self.hidden_size}) must be divisible by "
                             f"num_heads ({self.num_heads})")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"PanguAlphaConfig.dropout_rate must be in [0, 1), got {self.dropout_rate}")
        for field in ("compute_dtype", "softmax_dtype"):
            if getattr(self, field) not in ("float32", "float16", "bfloat16"):
                raise ValueError(f"PanguAlphaConfig.{field} must be float32/float16/bfloat16, got {getattr(self, field)!r}")
        if self.hidden_act not in ("gelu", "gelu_tanh", "fast_gelu"):
            raise ValueError(f"PanguAlphaConfig.hidden_act must be gelu/gelu_tanh/fast_gelu, got {self.hidden_act!r}")
        for field in ("eod_id", "pad_id", "eot_id"):
            if not 0 <= getattr(self, field) < self.vocab_size:
                raise ValueError(f"PanguAlphaConfig.{field}={getattr(self, field)} is outside the vocabulary "
                                 f"(vocab_size={self.vocab_size})")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_blocks(self) -> int:
        """Ordinary transformer blocks (the query layer excluded)."""
        return self.num_layers - 1

    def replace(self, **overrides: Any) -> "PanguAlphaConfig":
        """A validated copy with some fields changed (unknown names raise TypeError)."""
        return dataclasses.replace(self, **overrides)


# SPEC §3 table; the big presets keep the 40000 vocab and seq 1024. tiny/small are CPU configs with
# a higher learning rate and a short warmup so that a few hundred steps show learning.
PRESETS: Dict[str, Dict[str, Any]] = {
    "tiny": dict(seq_length=32, hidden_size=64, num_heads=4, num_layers=3, ffn_hidden_size=256,
                 batch_size=4, start_lr=1e-3, end_lr=1e-5, warmup_steps=10),
    "small": dict(seq_length=128, hidden_size=256, num_heads=8, num_layers=4, ffn_hidden_size=1024,
                  batch_size=4, start_lr=5e-4, end_lr=1e-5, warmup_steps=50),
    "350M": dict(seq_length=1024, hidden_size=1280, num_heads=32, num_layers=16, ffn_hidden_size=5120,
                 batch_size=2, start_lr=1e-4, end_lr=1e-6),
    "1.3B": dict(seq_length=1024, hidden_size=2560, num_heads=32, num_layers=16, ffn_hidden_size=10240,
                 batch_size=1, start_lr=1e-4, end_lr=1e-6),
    "2.6B": dict(seq_length=1024, hidden_size=2560, num_heads=32, num_layers=32, ffn_hidden_size=10240,
                 batch_size=1, start_lr=1e-4, end_lr=1e-6),
    "13B": dict(seq_length=1024, hidden_size=5120, num_heads=40, num_layers=40, ffn_hidden_size=20480,
                batch_size=1, start_lr=5e-5, end_lr=1e-6),
    "200B": dict(seq_length=1024, hidden_size=16384, num_heads=128, num_layers=64, ffn_hidden_size=65536,
                 batch_size=1, start_lr=6e-5, end_lr=6e-6),
}
# the original's "self_define": the 350M recipe with --num_layers / --embedding_size / --num_heads
PRESETS["self_define"] = dict(PRESETS["350M"])


def preset_names() -> list:
    return list(PRESETS)


def get_config(name: str = "tiny", **overrides: Any) -> PanguAlphaConfig:
    """Preset `name` with `overrides` applied; overrides whose value is None are ignored.

    The None rule lets scripts pass argparse values straight through (`vocab_size=args.vocab_size`).
    """
    key = name if name in PRESETS else {k.lower(): k for k in PRESETS}.get(str(name).lower())
    if key is None:
        raise ValueError(f"unknown PanGu-alpha config {name!r}; choose one of {', '.join(PRESETS)}")
    values: Dict[str, Any] = dict(PRESETS[key])
    fields = {f.name for f in dataclasses.fields(PanguAlphaConfig)}
    for k, v in overrides.items():
        if k not in fields:
            raise TypeError(f"PanguAlphaConfig has no field {k!r}")
        if v is not None:
            values[k] = v
    return PanguAlphaConfig(**values)
