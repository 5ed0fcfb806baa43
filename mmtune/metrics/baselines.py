"""Trivial predictors that every model's number is set beside.

A video-prediction MSE means little on its own: on Moving MNIST a black frame already scores
about 170 per-frame MSE, because the digits cover a small part of the frame. These predictors
need no training, so they are computed for every split that a run evaluates:

- ``blank``: a black frame.
- ``mean_frame``: a constant frame at the training split's mean intensity (the best constant
  under MSE).
- ``last_frame``: the last input frame, held for every future step (right where nothing moves).
- ``input_mean``: the per-pixel mean of the input frames (a blurred trail of the motion).

Example:
    >>> import numpy as np
    >>> frames = np.zeros((4, 20, 64, 64), np.uint8)
    >>> evaluate_baselines(frames, train_mean=0.0)["blank"]["mse_frame"]
    0.0
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmtune.errors import MMTuneError
from mmtune.metrics.verdict import BASELINES, Verdict, best_baseline, verdict
from mmtune.metrics.video import MetricAccumulator

__all__ = [
    "BASELINES",
    "Verdict",
    "baseline_prediction",
    "best_baseline",
    "evaluate_baselines",
    "split_baselines",
    "train_mean_intensity",
    "verdict",
]

def baseline_prediction(name: str, x: Tensor, t_out: int, train_mean: float) -> Tensor:
    """The prediction of baseline `name` from inputs x (B, T_in, C, H, W): (B, t_out, C, H, W)."""
    b, _, c, h, w = x.shape
    if name == "blank":
        return x.new_zeros(b, t_out, c, h, w)
    if name == "mean_frame":
        return x.new_full((b, t_out, c, h, w), float(train_mean))
    if name == "last_frame":
        return x[:, -1:].expand(b, t_out, c, h, w)
    if name == "input_mean":
        return x.mean(dim=1, keepdim=True).expand(b, t_out, c, h, w)
    raise MMTuneError(f"unknown baseline {name!r}; expected one of {list(BASELINES)}")


def train_mean_intensity(frames: Any) -> float:
    """Mean pixel intensity in [0, 1] of uint8 frames (N, T, H, W), summed in chunks (no float copy),
    or of an array file's windows (`mmtune.data.arrays.Windows`), read in batches."""
    if not isinstance(frames, np.ndarray):
        from mmtune.data.arrays import mean_intensity

        return mean_intensity(frames)
    total = sum(int(frames[i : i + 1024].sum(dtype=np.int64)) for i in range(0, len(frames), 1024))
    return total / (255.0 * max(frames.size, 1))


@torch.no_grad()
def evaluate_baselines(
    frames: Any, train_mean: float, t_in: int = 10, batch_size: int = 256
) -> dict[str, dict[str, Any]]:
    """Every metric (mmtune.metrics) of every baseline on uint8 clips (N, 20, 64, 64) or an array file's windows.

    Args:
        frames: The split's clips, uint8 (N, T, H, W) or `Windows` (float (N, T, C, H, W) when indexed);
            the first `t_in` frames are the inputs, the rest the targets.
        train_mean: The training split's mean intensity in [0, 1] (see `train_mean_intensity`).
        t_in: Input frames.
        batch_size: Clips per chunk (memory only; the result does not depend on it).

    Returns:
        ``{baseline: metrics}``, each metrics dict as `MetricAccumulator.compute()` returns it.
    """
    shape = tuple(frames.shape)
    if len(shape) not in (4, 5) or shape[1] <= t_in:
        raise MMTuneError(f"baselines need clips (N, T > {t_in}, [C,] H, W), got shape {shape}")
    accs = {name: MetricAccumulator() for name in BASELINES}
    for lo in range(0, len(frames), batch_size):
        if isinstance(frames, np.ndarray):
            clip = torch.from_numpy(np.ascontiguousarray(frames[lo : lo + batch_size])).float().div_(255).unsqueeze(2)
        else:  # windows of an array file: (B, T, C, H, W) float32 in [0, 1]
            clip = torch.from_numpy(frames[np.arange(lo, min(lo + batch_size, len(frames)))])
        x, y = clip[:, :t_in], clip[:, t_in:]
        for name, acc in accs.items():
            acc.update(baseline_prediction(name, x, y.shape[1], train_mean), y)
    return {name: acc.compute() for name, acc in accs.items()}


def split_baselines(data: Any, splits: tuple[str, ...] = ("val", "test")) -> dict[str, Any]:
    """The baselines of every split a run evaluates, as written to test_metrics.json / baselines.json.

    Args:
        data: A `MovingMNIST` or `ArrayDataset` (anything with ``frames(split)`` and ``spec``).
        splits: The evaluated splits.

    Returns:
        ``{"train_mean": m, "descriptions": BASELINES, "splits": {split: {"size": n, "metrics":
        {baseline: metrics}}}}``; ``mean_frame`` uses the training split's mean intensity m
        (epoch 0's clips when the training data is drawn online).
    """
    train_mean = train_mean_intensity(data.frames("train"))
    t_in = data.spec.t_in
    out: dict[str, Any] = {"train_mean": train_mean, "descriptions": dict(BASELINES), "splits": {}}
    for split in splits:
        frames = data.frames(split)
        out["splits"][split] = {"size": int(len(frames)), "metrics": evaluate_baselines(frames, train_mean, t_in)}
    return out
