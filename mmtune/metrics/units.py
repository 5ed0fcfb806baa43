"""What each reported metric means, written beside every test result (the two MSE conventions differ by 65025/4096)."""

from __future__ import annotations

UNITS = {
    "mse_frame": "per-frame MSE: sum over 64x64 pixels in [0,1], mean over frames (OpenSTL)",
    "mse_pixel255": "per-pixel MSE on the 0-255 scale",
    "mae_frame": "per-frame MAE: sum over 64x64 pixels in [0,1], mean over frames (OpenSTL)",
    "ssim": "SSIM of frames in [0,1]",
    "psnr": "PSNR in dB of frames in [0,1]",
}
