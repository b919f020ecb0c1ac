"""Command-line flags of `--run_type predict` (light: the programs parse them before importing MindSpore).

Names and meanings follow the original example's generation options; `--run_type` itself is a
training flag (src/cli.py).
"""
from __future__ import annotations

import argparse

from .cli import str2bool

__all__ = ["add_predict_args"]


def add_predict_args(parser: argparse.ArgumentParser, server: bool = False) -> argparse.ArgumentParser:
    """Generation flags; `server`: the follower's session limits as well."""
    g = parser.add_argument_group("generation (--run_type predict)")
    g.add_argument("--prompt", action="append", default=None,
                   help="text to continue (repeatable); one line 'generated: ...' is printed per prompt")
    g.add_argument("--prompt_file", default=None, help="a UTF-8 file with one prompt per non-empty line")
    g.add_argument("--top_k_num", type=int, default=1, help="sample among the k most likely tokens (1 = greedy)")
    g.add_argument("--top_p", type=float, default=1.0,
                   help="nucleus sampling threshold, used instead of top-k when < 1.0")
    g.add_argument("--frequency_penalty", type=float, default=0.0,
                   help="subtracted from a token's log-probability per time it was generated")
    g.add_argument("--presence_penalty", type=float, default=0.0,
                   help="subtracted once from the log-probability of every token generated so far")
    g.add_argument("--max_generate_length", type=int, default=32, help="at most this many new tokens per prompt")
    g.add_argument("--end_token", type=int, default=9, help="stop when this token id is chosen (default 9, <eot>)")
    g.add_argument("--use_past", type=str2bool, default=True,
                   help="key/value cache (true): each new token costs one position; false recomputes the sequence")
    if server:
        s = parser.add_argument_group("serving generation (follower, --run_type predict)")
        s.add_argument("--max_sessions", type=int, default=4,
                       help="generation sessions served at once (each holds its key/value cache); more are refused")
        s.add_argument("--session_idle_timeout", type=float, default=300.0,
                       help="seconds after which an unused session is closed and its cache freed")
        s.add_argument("--serve_forever", type=str2bool, nargs="?", const=True, default=False,
                       help="keep serving after the leader said goodbye (default: stop then)")
    return parser
