"""Make the PanGu-alpha example importable (``src.*``, ``preprocess``, ``prepare_data``)."""
import os
import sys

import pytest

EXAMPLE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "example",
                                           "splitnn_pangu_alpha"))
if EXAMPLE_DIR not in sys.path:
    sys.path.insert(0, EXAMPLE_DIR)


@pytest.fixture(scope="session")
def sp_model(tmp_path_factory):
    """A small SentencePiece model trained once for the tokenizer and pipeline tests."""
    from tests.example.data_helpers import train_small_model
    return train_small_model(str(tmp_path_factory.mktemp("sp")))


@pytest.fixture(scope="session")
def tok(sp_model):
    from src.tokenizer import JIEBATokenizer
    return JIEBATokenizer(sp_model)
