"""Frame strips for any channel count: C = 1 grey, C = 3 RGB, any other C a grey row per channel."""

from __future__ import annotations

import numpy as np

from mmtune.strips import _GAP, strip_array


def _frames(c: int | None, t: int = 3, h: int = 4, w: int = 6) -> np.ndarray:
    shape = (t, h, w) if c is None else (t, c, h, w)
    return np.zeros(shape, np.float32)


def test_one_channel_is_grey_with_or_without_its_axis():
    for f in (_frames(None), _frames(1)):
        img = strip_array(f, f, f + 1.0)
        assert img.shape == (4 * 4 + 3 * _GAP, 3 * 6 + 2 * _GAP)
        assert img[2 * (4 + _GAP), 0] == 255 and img[0, 0] == 0  # the prediction row is white


def test_three_channels_are_rgb():
    truth = _frames(3)
    truth[:, 0] = 1.0  # red
    img = strip_array(truth, truth, truth)
    assert img.shape == (4 * 4 + 3 * _GAP, 3 * 6 + 2 * _GAP, 3)
    assert img[4 + _GAP, 0].tolist() == [255, 0, 0]  # the truth row, first frame


def test_other_channel_counts_get_a_row_each():
    truth = _frames(2)
    truth[:, 1] = 1.0  # channel 1 white, channel 0 black
    img = strip_array(truth, truth, truth)
    assert img.shape == (8 * 4 + 7 * _GAP, 3 * 6 + 2 * _GAP)  # input, truth, prediction, error x 2 channels
    rows = [img[r * (4 + _GAP), 0] for r in range(8)]
    assert rows == [0, 255, 0, 255, 0, 255, 0, 0]  # the error rows are black
