"""Split generation: party B serves its transformer blocks to party A's generation sessions.

Per generated token, party A sends B the new position's embedding and its attention-mask row
(which earlier positions it may see) and gets the blocks' hidden state back; B keeps every
layer's keys and values for the session. B never receives token ids, positions or text. A prompt
is one request with all its positions (start 0); without the cache (`--use_past false`) every
token re-sends the whole sequence (start 0 again).

    A -> B  OPEN  {meta: session, settings}                    B: new session, or ERROR (full, mismatch)
    A -> B  RUN   {meta: session, start, hidden_states [1,n,H], attention_mask [1,n,start+n] (bool)}
    B -> A  OK    {hidden_states [1,n,H]}                      (or ERROR: too long, bad shapes, ...)
    A -> B  CLOSE {meta: session}                              B frees the caches
"""
from __future__ import annotations

import logging
from typing import Dict, Mapping

import numpy as np

from mindspore_federated.communication.codec import to_numpy
from mindspore_federated.inference import InferenceClient
from mindspore_federated.inference.service import meta_int, meta_text
from mindspore_federated.protocol import describe_settings_mismatch

from .incremental import BlocksDecoder, BlocksSession, cache_bytes
from .pangu_alpha_config import PanguAlphaConfig

logger = logging.getLogger(__name__)

__all__ = ["MODEL_FIELDS", "model_settings", "PanguBlocksBackend", "RemoteBlocks", "describe_capacity"]

# what both parties' model parts must agree on for generation (no training recipe, no batch size)
MODEL_FIELDS = ("seq_length", "hidden_size", "num_heads", "num_layers", "ffn_hidden_size", "compute_dtype",
                "hidden_act")


def model_settings(config: PanguAlphaConfig) -> Dict[str, str]:
    return {name: str(getattr(config, name)) for name in MODEL_FIELDS}


def _encode(settings: Mapping[str, str]) -> str:
    return "\n".join(f"{name}={value}" for name, value in settings.items())


def _decode(text: str) -> Dict[str, str]:
    return dict(line.partition("=")[::2] for line in text.split("\n") if line)


class PanguBlocksBackend:
    """Party B's backend for `InferenceService`: one `BlocksSession` (key/value caches) per session."""

    def __init__(self, decoder: BlocksDecoder) -> None:
        self.decoder = decoder
        self.config = decoder.config
        self.settings = model_settings(self.config)

    def new_session(self) -> BlocksSession:
        return BlocksSession(self.decoder)

    def check_open(self, meta: Mapping) -> None:
        if meta.get("settings") is None:
            raise ValueError("OPEN without the model settings")
        mismatch = describe_settings_mismatch(self.settings, _decode(meta_text(meta, "settings")))
        if mismatch:
            raise ValueError(f"model settings differ between the parties: {mismatch} (start both with the "
                             f"flags of the training run)")

    def run(self, state: BlocksSession, message: Mapping) -> dict:
        start = meta_int(message["meta"], "start")
        if "hidden_states" not in message or "attention_mask" not in message:
            raise ValueError(f"RUN needs hidden_states and attention_mask, got {sorted(message)}")
        hidden, mask = to_numpy(message["hidden_states"]), to_numpy(message["attention_mask"])
        if hidden.dtype != np.float32:
            raise ValueError(f"hidden_states must be float32, got {hidden.dtype}")
        state.check(hidden.shape, mask.shape, start)  # before any work: shapes, positions, seq_length
        return {"hidden_states": state.run(hidden, mask, start)}


class RemoteBlocks:
    """Party A's handle on one session at party B (the blocks-session interface of PanguGenerator)."""

    def __init__(self, client: InferenceClient, config: PanguAlphaConfig) -> None:
        self.session = client.open(settings=_encode(model_settings(config)))

    def run(self, hidden: np.ndarray, mask: np.ndarray, start: int) -> np.ndarray:
        reply = self.session.run({"hidden_states": np.asarray(hidden, np.float32),
                                  "attention_mask": np.asarray(mask) > 0.5}, start=np.asarray(start, np.int64))
        return to_numpy(reply["hidden_states"])

    def close(self) -> None:
        self.session.close()


def describe_capacity(config: PanguAlphaConfig, layers: int, max_sessions: int) -> str:
    per = cache_bytes(config, layers)
    return (f"{max_sessions} sessions x {per / 2**20:.1f} MiB of key/value cache = at most "
            f"{max_sessions * per / 2**20:.1f} MiB")

