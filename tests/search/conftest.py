"""Shared bits of the sweep tests: a tiny search space that runs in seconds per trial on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = """
# The smallest sweep that still means something: two models, 3 epochs, a few clips.
model: {choices: [simple_lstm, conv_tau]}
shared:
  lr: {type: float, low: 1.0e-4, high: 3.0e-2, log: true}
  batch_size: 16
  epochs: 3
models:
  simple_lstm:
    preset: small
    hidden: {type: categorical, choices: [32, 64]}
  conv_tau:
    preset: small
    hid_S: 8
    hid_T: 16
    N_T: {type: int, low: 1, high: 2}
data: {train_size: 16, val_size: 8, test_size: 8}
"""


@pytest.fixture
def tiny_space(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path
