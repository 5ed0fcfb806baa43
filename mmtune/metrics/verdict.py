"""A model's test MSE set beside the trivial predictors' (`baselines.py` computes those).

Torch-free, so that `mmtune report` can give the verdict from the JSON files alone.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from mmtune.data.spec import MOVING_MNIST
from mmtune.metrics.units import frame_to_pixel255

BASELINES: dict[str, str] = {
    "blank": "a black frame",
    "mean_frame": "a constant frame at the training split's mean intensity",
    "last_frame": "the last input frame, repeated",
    "input_mean": "the per-pixel mean of the input frames",
}


def best_baseline(baselines: dict[str, dict[str, Any]], metric: str = "mse_frame") -> tuple[str, float]:
    """(name, value) of the baseline with the lowest `metric`; ("", nan) when there is none."""
    finite = {k: float(v[metric]) for k, v in baselines.items() if math.isfinite(float(v.get(metric, math.nan)))}
    if not finite:
        return "", math.nan
    name = min(finite, key=finite.__getitem__)
    return name, finite[name]


class Verdict(NamedTuple):
    """A model's test MSE set beside the best baseline of the same split."""

    mse_frame: float  # the model's
    baseline: str  # the best baseline's name ("" when there is none)
    baseline_mse: float  # its mse_frame
    ratio: float  # model mse_frame / baseline mse_frame (nan when either is missing)
    beats: bool  # ratio < 1
    pixels: int = MOVING_MNIST.pixels  # values per frame, C * H * W (default Moving MNIST's 4096): the per-pixel divisor

    def words(self, model: str) -> str:
        """One line for the console and the report."""
        if not math.isfinite(self.ratio):
            return f"{model}: no baseline comparison (a test MSE or the baselines are missing)"
        rel = (f"test mse_frame {self.mse_frame:.1f} (per-frame; {frame_to_pixel255(self.mse_frame, self.pixels):.0f} per-pixel "
               f"0-255) = {self.ratio:.2f}x the best baseline ({self.baseline}, mse_frame {self.baseline_mse:.1f})")
        if self.beats:
            return f"{model}: {rel}"
        return f"{model}: DOES NOT BEAT the best baseline: {rel}; it has not learned to predict"


def verdict(model_mse_frame: float, baselines: dict[str, dict[str, Any]], pixels: int = MOVING_MNIST.pixels) -> Verdict:
    """Compare a model's mse_frame with the best of `baselines` (``{name: metrics}`` of one split);
    `pixels` is C * H * W of a frame."""
    name, value = best_baseline(baselines)
    ratio = model_mse_frame / value if math.isfinite(model_mse_frame) and value > 0 else math.nan
    return Verdict(float(model_mse_frame), name, value, ratio, bool(math.isfinite(ratio) and ratio < 1.0), int(pixels))


def result_line(model: str, test: dict[str, Any], found: Verdict | None) -> str:
    """One line for a tested model, the same after `mmtune train` and a sweep: its test MSE in both
    conventions set beside the best baseline (`Verdict.words`), and its SSIM."""
    if found is not None and found.baseline:
        return f"{found.words(model)}; ssim {test['ssim']:.4f}"
    return (f"{model}: test mse_frame {test['mse_frame']:.2f} (OpenSTL per-frame), mse_pixel255 "
            f"{test['mse_pixel255']:.1f} (per-pixel 0-255), ssim {test['ssim']:.4f}")

