"""Make the PanGu-alpha example importable (``src.*``, ``preprocess``, ``prepare_data``)."""
import os
import sys

EXAMPLE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "example",
                                           "splitnn_pangu_alpha"))
if EXAMPLE_DIR not in sys.path:
    sys.path.insert(0, EXAMPLE_DIR)
