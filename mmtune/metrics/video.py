"""Frame-level metrics for video prediction: MSE, MAE, PSNR and SSIM, overall and per horizon.

All functions take ``pred`` and ``true`` of shape ``(B, T, C, H, W)`` with pixels in ``[0, 1]``
and compute in float32 (bf16 or float16 inputs are upcast), without tracking gradients.

Two MSE conventions are in use for Moving MNIST, and papers mix them up:

- ``mse_frame`` (OpenSTL, SimVP, TAU): per frame, the *sum* over ``C*H*W`` of the squared error
  with pixels in ``[0, 1]``, averaged over batch and frames. OpenSTL's MAE (``mae_frame``) is
  the same with absolute error. TAU's reported Moving MNIST MSE of about 19.8 is on this scale.
- ``mse_pixel255``: the plain per-pixel mean squared error on the 0-255 scale,
  ``mean((255 * pred - 255 * true) ** 2)``.

They differ by a constant: ``mse_pixel255 = mse_frame * 255**2 / (C*H*W)``, i.e. for a
64x64 single-channel frame ``mse_pixel255 = mse_frame * 65025 / 4096 ≈ mse_frame * 15.875``.
``frame_to_pixel255`` and ``pixel255_to_frame`` (in `units.py`) do the conversion.

PSNR and SSIM are computed per frame (data range 1) and averaged over frames.

Example:
    >>> import torch
    >>> pred, true = torch.zeros(2, 10, 1, 64, 64), torch.full((2, 10, 1, 64, 64), 0.5)
    >>> mse_frame(pred, true)
    1024.0
    >>> len(per_horizon("psnr", pred, true))
    10
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from mmtune.errors import MMTuneError
from mmtune.metrics.units import SCALE255_SQ, frame_to_pixel255, pixel255_to_frame

__all__ = [
    "METRIC_NAMES",
    "PSNR_MSE_FLOOR",
    "MetricAccumulator",
    "frame_to_pixel255",
    "mae_frame",
    "mse_frame",
    "mse_pixel255",
    "per_horizon",
    "pixel255_to_frame",
    "psnr",
    "ssim",
]

METRIC_NAMES: tuple[str, ...] = ("mse_frame", "mse_pixel255", "mae_frame", "ssim", "psnr")

# Per-pixel MSE floor for PSNR: identical frames score 10*log10(1/1e-10) = 100 dB, not inf.
PSNR_MSE_FLOOR = 1e-10

_SSIM_WIN = 11
_SSIM_SIGMA = 1.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _check_video_pair(pred: Tensor, true: Tensor) -> tuple[Tensor, Tensor]:
    """Validate two (B, T, C, H, W) tensors of equal shape and return them detached in float32."""
    if pred.dim() != 5:
        raise MMTuneError(f"pred must have shape (B, T, C, H, W), got {tuple(pred.shape)}")
    if pred.shape != true.shape:
        raise MMTuneError(
            f"pred and true must have the same shape, got {tuple(pred.shape)} "
            f"and {tuple(true.shape)}"
        )
    return pred.detach().float(), true.detach().float()


def _mse_frame_steps(pred: Tensor, true: Tensor) -> Tensor:
    """Per-frame summed squared error, (B, T)."""
    return (pred - true).square().sum(dim=(2, 3, 4))


def _mse_pixel255_steps(pred: Tensor, true: Tensor) -> Tensor:
    """Per-frame mean squared error on the 0-255 scale, (B, T)."""
    return (pred - true).square().mean(dim=(2, 3, 4)) * SCALE255_SQ


def _mae_frame_steps(pred: Tensor, true: Tensor) -> Tensor:
    """Per-frame summed absolute error, (B, T)."""
    return (pred - true).abs().sum(dim=(2, 3, 4))


def _psnr_steps(pred: Tensor, true: Tensor) -> Tensor:
    """Per-frame PSNR in dB with data range 1, (B, T)."""
    mse = (pred - true).square().mean(dim=(2, 3, 4)).clamp_min(PSNR_MSE_FLOOR)
    return -10.0 * torch.log10(mse)


def _gaussian_1d(device: torch.device) -> Tensor:
    """Normalised 11-tap Gaussian (sigma 1.5), as scipy's gaussian_filter with truncate=3.5."""
    radius = (_SSIM_WIN - 1) // 2
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    g = torch.exp(-0.5 * (x / _SSIM_SIGMA) ** 2)
    return g / g.sum()


def _ssim_steps(pred: Tensor, true: Tensor) -> Tensor:
    """Per-frame SSIM with data range 1, (B, T); matches skimage's gaussian_weights=True. NaN for
    frames under 11x11, where its 11-tap Gaussian window does not fit (an own array's small frames:
    their other metrics still count)."""
    b, t, c, h, w = pred.shape
    if h < _SSIM_WIN or w < _SSIM_WIN:
        return torch.full((b, t), float("nan"), device=pred.device)
    x = pred.reshape(b * t, c, h, w)
    y = true.reshape(b * t, c, h, w)
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (N, 5C, H, W)
    groups = maps.shape[1]
    g = _gaussian_1d(maps.device)
    # A valid (unpadded) convolution yields exactly the interior that skimage keeps after
    # cropping (win-1)//2 pixels per border, so its reflect padding never enters the mean.
    maps = F.conv2d(maps, g.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)
    maps = F.conv2d(maps, g.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)
    ux, uy, uxx, uyy, uxy = maps.chunk(5, dim=1)  # each (N, C, H-10, W-10)
    vx = uxx - ux * ux
    vy = uyy - uy * uy
    vxy = uxy - ux * uy
    c1 = _SSIM_K1**2
    c2 = _SSIM_K2**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).reshape(b, t)


_STEP_FNS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mse_frame": _mse_frame_steps,
    "mse_pixel255": _mse_pixel255_steps,
    "mae_frame": _mae_frame_steps,
    "ssim": _ssim_steps,
    "psnr": _psnr_steps,
}


def _steps(metric_name: str, pred: Tensor, true: Tensor) -> Tensor:
    """Validated per-sample, per-frame values of one metric, (B, T) float32."""
    if metric_name not in _STEP_FNS:
        raise MMTuneError(f"metric_name must be one of {METRIC_NAMES}, got {metric_name!r}")
    pred, true = _check_video_pair(pred, true)
    with torch.no_grad():
        return _STEP_FNS[metric_name](pred, true)


def mse_frame(pred: Tensor, true: Tensor) -> float:
    """OpenSTL MSE: per-frame sum of squared error over C*H*W, averaged over batch and frames.

    Args:
        pred: Predicted frames, (B, T, C, H, W), pixels in [0, 1].
        true: Target frames, same shape.

    Returns:
        A Python float (about 19.8 for TAU on Moving MNIST).
    """
    return _steps("mse_frame", pred, true).mean().item()


def mse_pixel255(pred: Tensor, true: Tensor) -> float:
    """Mean per-pixel squared error on the 0-255 scale, ``mean((255*pred - 255*true)**2)``.

    Equals ``frame_to_pixel255(mse_frame(pred, true), C*H*W)``.

    Args:
        pred: Predicted frames, (B, T, C, H, W), pixels in [0, 1].
        true: Target frames, same shape.

    Returns:
        A Python float.
    """
    return _steps("mse_pixel255", pred, true).mean().item()


def mae_frame(pred: Tensor, true: Tensor) -> float:
    """OpenSTL MAE: per-frame sum of absolute error over C*H*W, averaged over batch and frames.

    Args:
        pred: Predicted frames, (B, T, C, H, W), pixels in [0, 1].
        true: Target frames, same shape.

    Returns:
        A Python float.
    """
    return _steps("mae_frame", pred, true).mean().item()


def psnr(pred: Tensor, true: Tensor) -> float:
    """PSNR in dB with data range 1, computed per frame and averaged over batch and frames.

    Each frame scores ``10 * log10(1 / mse)`` with ``mse`` its per-pixel mean squared error,
    floored at ``PSNR_MSE_FLOOR`` (1e-10), so an exact frame scores 100 dB instead of inf.

    Args:
        pred: Predicted frames, (B, T, C, H, W), pixels in [0, 1].
        true: Target frames, same shape.

    Returns:
        A Python float.
    """
    return _steps("psnr", pred, true).mean().item()


def ssim(pred: Tensor, true: Tensor) -> float:
    """SSIM per frame, averaged over batch and frames.

    Same as ``skimage.metrics.structural_similarity(p, t, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)`` on each frame (11x11 Gaussian window,
    K1=0.01, K2=0.03, a 5-pixel border excluded from the mean); channels are averaged.

    Args:
        pred: Predicted frames, (B, T, C, H, W), pixels in [0, 1]; NaN when H or W is under 11.
        true: Target frames, same shape.

    Returns:
        A Python float, 1.0 for identical inputs.
    """
    return _steps("ssim", pred, true).mean().item()


def per_horizon(metric_name: str, pred: Tensor, true: Tensor) -> list[float]:
    """One metric per prediction step, averaged over the batch.

    Args:
        metric_name: One of ``METRIC_NAMES``.
        pred: Predicted frames, (B, T, C, H, W), pixels in [0, 1].
        true: Target frames, same shape.

    Returns:
        T floats: the metric at horizons t+1, ..., t+T. Their mean is the overall metric.

    Example:
        >>> import torch
        >>> true = torch.zeros(1, 3, 1, 64, 64)
        >>> pred = true.clone()
        >>> pred[0, 2, 0, 0, 0] = 1.0
        >>> per_horizon("mse_frame", pred, true)
        [0.0, 0.0, 1.0]
    """
    return _steps(metric_name, pred, true).mean(dim=0).tolist()


class MetricAccumulator:
    """Running averages of every metric in ``METRIC_NAMES`` over many batches.

    Each sample counts once, whatever the batch sizes, so the result equals the metrics of
    the concatenated batches. Statistics stay on the inputs' device in float64 until
    ``compute()``.

    Example:
        >>> import torch
        >>> acc = MetricAccumulator()
        >>> acc.update(torch.zeros(3, 10, 1, 64, 64), torch.zeros(3, 10, 1, 64, 64))
        >>> acc.compute()["mse_frame"], acc.num_samples
        (0.0, 3)
    """

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._num_samples = 0
        self._num_steps: int | None = None

    @property
    def num_samples(self) -> int:
        """Samples seen since construction or the last reset."""
        return self._num_samples

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self._sums = {}
        self._num_samples = 0
        self._num_steps = None

    def update(self, pred: Tensor, true: Tensor) -> None:
        """Add one batch.

        Args:
            pred: Predicted frames, (B, T, C, H, W), pixels in [0, 1]; any float dtype.
            true: Target frames, same shape. T must match earlier batches.
        """
        pred, true = _check_video_pair(pred, true)
        b, t = pred.shape[:2]
        if self._num_steps is not None and t != self._num_steps:
            raise MMTuneError(
                f"every batch must have the same number of frames T, "
                f"got {t} after {self._num_steps}"
            )
        with torch.no_grad():
            for name in METRIC_NAMES:
                step_sum = _STEP_FNS[name](pred, true).sum(dim=0).double()  # (T,)
                if name in self._sums:
                    self._sums[name] += step_sum.to(self._sums[name].device)
                else:
                    self._sums[name] = step_sum
        self._num_steps = t
        self._num_samples += b

    def compute(self) -> dict[str, float | list[float]]:
        """Averages over every sample seen.

        Returns:
            For each name in ``METRIC_NAMES``, the overall value under ``name`` (a float) and
            the per-horizon values under ``f"{name}_per_step"`` (a list of T floats).

        Raises:
            MMTuneError: If no sample has been added.
        """
        if self._num_samples == 0:
            raise MMTuneError("MetricAccumulator.compute() needs at least one update(), got none")
        out: dict[str, float | list[float]] = {}
        for name in METRIC_NAMES:
            per_step = (self._sums[name] / self._num_samples).cpu()
            out[name] = per_step.mean().item()
            out[f"{name}_per_step"] = per_step.tolist()
        return out
