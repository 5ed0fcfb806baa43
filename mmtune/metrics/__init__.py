"""Evaluation metrics (OpenSTL conventions) and the training loss for video prediction."""

from __future__ import annotations

from mmtune.metrics.loss import VideoLoss, differential_divergence
from mmtune.metrics.video import (
    METRIC_NAMES,
    PSNR_MSE_FLOOR,
    MetricAccumulator,
    frame_to_pixel255,
    mae_frame,
    mse_frame,
    mse_pixel255,
    per_horizon,
    pixel255_to_frame,
    psnr,
    ssim,
)

__all__ = [
    "METRIC_NAMES",
    "PSNR_MSE_FLOOR",
    "MetricAccumulator",
    "VideoLoss",
    "differential_divergence",
    "frame_to_pixel255",
    "mae_frame",
    "mse_frame",
    "mse_pixel255",
    "per_horizon",
    "pixel255_to_frame",
    "psnr",
    "ssim",
]
