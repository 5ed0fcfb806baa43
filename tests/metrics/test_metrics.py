"""Tests for mmtune.metrics.video: hand-computed values, skimage SSIM parity, accumulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from mmtune.errors import MMTuneError
from mmtune.metrics import (
    METRIC_NAMES,
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

METRIC_FNS = {
    "mse_frame": mse_frame,
    "mse_pixel255": mse_pixel255,
    "mae_frame": mae_frame,
    "ssim": ssim,
    "psnr": psnr,
}


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    """Uniform [0, 1) tensor from a fixed seed."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _structured_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 64x64 image with edges and flat areas, and a shifted, noisy copy of it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    img = 0.3 * xx + 0.2 * yy
    img[10:30, 12:40] = 0.9
    img[40:58, 5:20] = 0.05
    img += 0.2 * (np.sin(xx * 12) > 0)
    img = np.clip(img, 0, 1)
    other = np.roll(img, shift=(2, -1), axis=(0, 1)) + rng.normal(0, 0.05, img.shape)
    return img, np.clip(other, 0, 1)


def test_constant_error_hand_computed() -> None:
    # 16 pixels per frame, each off by 0.5: per-frame sum = 16 * 0.25. A mean over pixels
    # (instead of OpenSTL's sum) would give 0.25 and fail here.
    pred = torch.zeros(1, 2, 1, 4, 4)
    true = torch.full((1, 2, 1, 4, 4), 0.5)
    assert mse_frame(pred, true) == pytest.approx(4.0)
    assert mse_pixel255(pred, true) == pytest.approx(127.5**2)  # 16256.25
    assert mae_frame(pred, true) == pytest.approx(8.0)
    assert psnr(pred, true) == pytest.approx(10 * math.log10(1 / 0.25))


def test_single_wrong_pixel() -> None:
    true = torch.zeros(1, 2, 1, 4, 4)
    pred = true.clone()
    pred[0, 0, 0, 1, 2] = 0.5
    # frame 0: sum sq = 0.25, frame 1: 0 -> mean over frames 0.125
    assert mse_frame(pred, true) == pytest.approx(0.125)
    assert mae_frame(pred, true) == pytest.approx(0.25)
    assert mse_pixel255(pred, true) == pytest.approx(127.5**2 / 32)
    assert per_horizon("mse_frame", pred, true) == pytest.approx([0.25, 0.0])


def test_metrics_return_python_floats() -> None:
    x = _rand(2, 3, 1, 16, 16)
    for fn in METRIC_FNS.values():
        assert type(fn(x, x * 0.5)) is float


def test_per_horizon_known_errors() -> None:
    # frame k has exactly k wrong pixels, each off by 1, in every sample
    true = torch.zeros(2, 10, 1, 16, 16)
    pred = true.clone()
    for k in range(10):
        pred[:, k, 0, 0, :k] = 1.0
    steps = list(range(10))
    assert per_horizon("mse_frame", pred, true) == pytest.approx(steps)
    assert per_horizon("mae_frame", pred, true) == pytest.approx(steps)
    assert per_horizon("mse_pixel255", pred, true) == pytest.approx(
        [k * 65025 / 256 for k in steps]
    )
    psnr_steps = per_horizon("psnr", pred, true)
    assert psnr_steps[0] == pytest.approx(100.0)  # exact frame: capped, not inf
    assert psnr_steps[1:] == pytest.approx([10 * math.log10(256 / k) for k in steps[1:]])
    assert mse_frame(pred, true) == pytest.approx(4.5)


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_per_horizon_mean_is_overall(name: str) -> None:
    pred, true = _rand(3, 10, 1, 64, 64, seed=1), _rand(3, 10, 1, 64, 64, seed=2)
    steps = per_horizon(name, pred, true)
    assert len(steps) == 10
    assert sum(steps) / 10 == pytest.approx(METRIC_FNS[name](pred, true), rel=1e-5)


def test_per_horizon_unknown_name() -> None:
    x = torch.zeros(1, 2, 1, 16, 16)
    with pytest.raises(MMTuneError, match="'lpips'"):
        per_horizon("lpips", x, x)


def test_conversion_identity_64x64() -> None:
    pred, true = _rand(4, 10, 1, 64, 64, seed=3), _rand(4, 10, 1, 64, 64, seed=4)
    frame, pixel = mse_frame(pred, true), mse_pixel255(pred, true)
    assert pixel == pytest.approx(frame * 65025 / 4096, rel=1e-5)
    assert frame_to_pixel255(frame) == pytest.approx(pixel, rel=1e-5)
    assert pixel255_to_frame(pixel) == pytest.approx(frame, rel=1e-5)
    assert frame_to_pixel255(1.0) == pytest.approx(15.875, abs=1e-3)
    assert frame_to_pixel255(1.0, pixels=16) == pytest.approx(65025 / 16)


def test_psnr_known_values() -> None:
    true = torch.full((2, 3, 1, 64, 64), 0.5)
    assert psnr(true + 0.1, true) == pytest.approx(20.0, abs=1e-4)  # mse 0.01
    assert psnr(true, true) == pytest.approx(100.0)
    # PSNR is averaged per frame: frames at 20 dB and 40 dB give 30, not PSNR of the mean mse
    pred = true.clone()
    pred[:, 0] += 0.1
    pred[:, 1] += 0.01
    pred[:, 2] += 0.01
    assert per_horizon("psnr", pred, true) == pytest.approx([20.0, 40.0, 40.0], abs=1e-3)
    assert psnr(pred, true) == pytest.approx(100 / 3, abs=1e-3)


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """The reference: skimage SSIM with the Wang et al. Gaussian settings."""
    return structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1,
    )


def test_ssim_matches_skimage_random() -> None:
    true = _rand(2, 3, 1, 64, 64, seed=5)
    pred = (true + 0.3 * _rand(2, 3, 1, 64, 64, seed=6)).clamp(0, 1)
    pred[1, 2] = _rand(1, 64, 64, seed=7)  # an unrelated frame, SSIM near 0
    ours = per_horizon("ssim", pred[:1], true[:1]) + per_horizon("ssim", pred[1:], true[1:])
    ref = [
        _skimage_ssim(pred[b, t, 0].double().numpy(), true[b, t, 0].double().numpy())
        for b in range(2)
        for t in range(3)
    ]
    assert ours == pytest.approx(ref, abs=1e-4)
    assert ssim(pred, true) == pytest.approx(float(np.mean(ref)), abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_matches_skimage_structured(seed: int) -> None:
    a, b = _structured_pair(seed)
    pred = torch.from_numpy(a).float().view(1, 1, 1, 64, 64)
    true = torch.from_numpy(b).float().view(1, 1, 1, 64, 64)
    assert ssim(pred, true) == pytest.approx(_skimage_ssim(a, b), abs=1e-4)
    assert ssim(pred, true) < 0.95  # the pair is far from identical


def test_ssim_identical_is_one() -> None:
    x = _rand(2, 4, 1, 64, 64, seed=8)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    a, _ = _structured_pair(0)
    s = torch.from_numpy(a).float().view(1, 1, 1, 64, 64)
    assert ssim(s, s) == pytest.approx(1.0, abs=1e-6)


def test_ssim_of_small_frames_is_nan_and_the_rest_still_count() -> None:
    """An own array's 8x8 frames: SSIM's 11-tap window does not fit, so it is NaN, not an error that
    would stop the baselines and the validation; the MSE beside it is computed."""
    x, y = torch.zeros(1, 2, 1, 8, 8), torch.ones(1, 2, 1, 8, 8)
    assert math.isnan(ssim(x, y))
    acc = MetricAccumulator()
    acc.update(x, y)
    out = acc.compute()
    assert math.isnan(out["ssim"]) and out["mse_frame"] == pytest.approx(64.0)


def test_shape_validation() -> None:
    with pytest.raises(MMTuneError, match="same shape"):
        mse_frame(torch.zeros(1, 2, 1, 4, 4), torch.zeros(1, 3, 1, 4, 4))
    with pytest.raises(MMTuneError, match=r"\(B, T, C, H, W\)"):
        mse_frame(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4))


def test_accumulator_uneven_batches_equal_concatenation() -> None:
    sizes = [3, 1, 5]
    preds = [_rand(n, 10, 1, 64, 64, seed=10 + i) for i, n in enumerate(sizes)]
    trues = [(p + 0.2 * _rand(*p.shape, seed=20 + i)).clamp(0, 1) for i, p in enumerate(preds)]
    acc = MetricAccumulator()
    for p, t in zip(preds, trues, strict=True):
        acc.update(p, t)
    got = acc.compute()
    pred, true = torch.cat(preds), torch.cat(trues)
    assert acc.num_samples == 9
    assert set(got) == set(METRIC_NAMES) | {f"{n}_per_step" for n in METRIC_NAMES}
    for name, fn in METRIC_FNS.items():
        assert got[name] == pytest.approx(fn(pred, true), rel=1e-5)
        assert got[f"{name}_per_step"] == pytest.approx(per_horizon(name, pred, true), rel=1e-5)
    # a plain mean of the three batch means would weight the 1-sample batch like the others
    batch_means = [mse_frame(p, t) for p, t in zip(preds, trues, strict=True)]
    assert got["mse_frame"] != pytest.approx(sum(batch_means) / 3, rel=1e-4)


def test_accumulator_bf16_under_no_grad() -> None:
    pred = _rand(2, 10, 1, 64, 64, seed=30).requires_grad_()
    true = _rand(2, 10, 1, 64, 64, seed=31)
    acc = MetricAccumulator()
    with torch.no_grad():
        acc.update(pred.bfloat16(), true.bfloat16())
    got = acc.compute()
    # bf16 inputs are rounded, but the statistics are computed in float32
    assert got["mse_frame"] == pytest.approx(mse_frame(pred, true), rel=1e-2)
    assert got["ssim"] == pytest.approx(ssim(pred, true), abs=1e-2)
    acc.update(pred, true)  # outside no_grad, with a grad-requiring input
    assert acc.num_samples == 4


def test_accumulator_errors_and_reset() -> None:
    acc = MetricAccumulator()
    with pytest.raises(MMTuneError, match="got none"):
        acc.compute()
    acc.update(torch.zeros(1, 10, 1, 16, 16), torch.zeros(1, 10, 1, 16, 16))
    with pytest.raises(MMTuneError, match="got 5 after 10"):
        acc.update(torch.zeros(1, 5, 1, 16, 16), torch.zeros(1, 5, 1, 16, 16))
    acc.reset()
    assert acc.num_samples == 0
    acc.update(torch.zeros(1, 5, 1, 16, 16), torch.ones(1, 5, 1, 16, 16))
    assert acc.compute()["mae_frame_per_step"] == pytest.approx([256.0] * 5)
