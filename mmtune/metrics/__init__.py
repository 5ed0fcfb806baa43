"""Evaluation metrics (OpenSTL conventions) and the training loss for video prediction.

`video` computes the metrics and `loss` the training loss (both need torch); `units` (the two MSE
conventions and their conversion) and `verdict` (a model set beside the baselines) do not, so
that the report reads a run's files without importing torch. The names below import on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "VideoLoss": "loss", "differential_divergence": "loss",
    "METRIC_NAMES": "video", "PSNR_MSE_FLOOR": "video", "MetricAccumulator": "video", "mae_frame": "video",
    "mse_frame": "video", "mse_pixel255": "video", "per_horizon": "video", "psnr": "video", "ssim": "video",
    "frame_to_pixel255": "units", "pixel255_to_frame": "units",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"mmtune.metrics.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'mmtune.metrics' has no attribute {name!r}")
