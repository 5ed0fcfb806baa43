"""The trivial baselines against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmtune.errors import MMTuneError
from mmtune.metrics.baselines import (
    BASELINES,
    baseline_prediction,
    best_baseline,
    evaluate_baselines,
    train_mean_intensity,
    verdict,
)


def _clips() -> np.ndarray:
    """Two clips: a 10x10 white square that sits still for 10 frames, then moves 20 px right."""
    frames = np.zeros((2, 20, 64, 64), np.uint8)
    frames[:, :10, 0:10, 0:10] = 255
    frames[:, 10:, 0:10, 20:30] = 255
    return frames


def test_blank_and_last_frame_by_hand() -> None:
    out = evaluate_baselines(_clips(), train_mean=0.0)
    # blank: each target frame has 100 white pixels -> per-frame squared-error sum 100
    assert out["blank"]["mse_frame"] == pytest.approx(100.0)
    # last input frame: the square in the wrong place -> 100 missed + 100 false pixels
    assert out["last_frame"]["mse_frame"] == pytest.approx(200.0)
    # the inputs never change, so their mean is the last frame
    assert out["input_mean"]["mse_frame"] == pytest.approx(200.0)
    assert out["blank"]["mse_pixel255"] == pytest.approx(100.0 * 65025 / 4096)


def test_mean_frame_is_a_constant_at_the_given_intensity() -> None:
    m = 100 / 4096
    out = evaluate_baselines(_clips(), train_mean=m)
    # 100 pixels at (1 - m)^2 and 3996 at m^2
    assert out["mean_frame"]["mse_frame"] == pytest.approx(100 * (1 - m) ** 2 + 3996 * m**2, rel=1e-5)
    assert out["mean_frame"]["mse_frame"] < out["blank"]["mse_frame"]


def test_train_mean_and_predictions() -> None:
    frames = _clips()
    assert train_mean_intensity(frames) == pytest.approx(100 / 4096)
    x = torch.rand(3, 10, 1, 8, 8)
    for name in BASELINES:
        assert baseline_prediction(name, x, 10, 0.2).shape == (3, 10, 1, 8, 8)
    assert torch.equal(baseline_prediction("last_frame", x, 10, 0.0)[:, 4], x[:, -1])
    with pytest.raises(MMTuneError, match="unknown baseline"):
        baseline_prediction("oracle", x, 10, 0.0)


def test_best_baseline_and_verdict() -> None:
    base = {"blank": {"mse_frame": 170.0}, "mean_frame": {"mse_frame": 160.0}, "broken": {"mse_frame": math.nan}}
    assert best_baseline(base) == ("mean_frame", 160.0)
    good, bad = verdict(80.0, base), verdict(170.0, base)
    assert good.ratio == pytest.approx(0.5) and good.beats and "0.50x" in good.words("m")
    assert not bad.beats and "DOES NOT BEAT" in bad.words("m")
    assert best_baseline({}) == ("", math.nan) and not verdict(1.0, {}).beats


def test_baselines_and_verdict_on_an_array_files_windows(tmp_path) -> None:
    """Windows of a 2-channel 8x12 file: the blank frame's mse_frame is the sum over C*H*W, and the
    verdict's per-pixel figure divides by C*H*W = 192."""
    from mmtune.data.arrays import ArrayDataConfig, ArrayDataset
    from mmtune.metrics.baselines import split_baselines

    clips = np.zeros((10, 8, 2, 8, 12), np.uint8)
    clips[:, :, 1] = 255  # channel 1 white: every target frame has 8 * 12 ones
    np.save(tmp_path / "c.npy", clips)
    data = ArrayDataset(ArrayDataConfig(path=str(tmp_path / "c.npy"), t_in=4, t_out=4))
    base = split_baselines(data)
    assert base["train_mean"] == pytest.approx(0.5)
    test = base["splits"]["test"]["metrics"]
    assert test["blank"]["mse_frame"] == pytest.approx(96.0)  # 8 * 12 ones
    assert test["last_frame"]["mse_frame"] == 0.0
    assert test["mean_frame"]["mse_frame"] == pytest.approx(48.0)  # 192 values off by 0.5
    v = verdict(48.0, {"blank": test["blank"]}, pixels=2 * 8 * 12)
    assert "mse_frame 48.0 (per-frame; 16256 per-pixel 0-255) = 0.50x the best baseline (blank" in v.words("m")
