"""What each reported metric means, written beside every test result (the two MSE conventions differ by 65025/(C*H*W))."""

from __future__ import annotations

from mmtune.data.spec import MOVING_MNIST, ClipSpec

SCALE255_SQ = 255.0**2  # 65025


def units(spec: ClipSpec = MOVING_MNIST) -> dict[str, str]:
    """The unit text of each metric for clips of `spec` (the sums run over its C x H x W values).

    Example:
        >>> units(ClipSpec(8, 8, 2, 24, 32))["mse_frame"]
        'per-frame MSE: sum over 2x24x32 values in [0,1], mean over frames (OpenSTL)'
    """
    frame = f"{spec.height}x{spec.width} pixels" if spec.channels == 1 else \
        f"{spec.channels}x{spec.height}x{spec.width} values"
    return {
        "mse_frame": f"per-frame MSE: sum over {frame} in [0,1], mean over frames (OpenSTL)",
        "mse_pixel255": "per-pixel MSE on the 0-255 scale",
        "mae_frame": f"per-frame MAE: sum over {frame} in [0,1], mean over frames (OpenSTL)",
        "ssim": "SSIM of frames in [0,1]",
        "psnr": "PSNR in dB of frames in [0,1]",
    }


UNITS = units()  # Moving MNIST's 1x64x64 frames


def frame_to_pixel255(x: float, pixels: int = MOVING_MNIST.pixels) -> float:
    """Convert an OpenSTL per-frame MSE to a per-pixel MSE on the 0-255 scale.

    Args:
        x: MSE summed over the ``pixels`` values of a frame, pixels in ``[0, 1]``.
        pixels: Values per frame, ``C * H * W`` (4096 for 1x64x64 Moving MNIST).

    Returns:
        ``x * 65025 / pixels``.
    """
    return x * SCALE255_SQ / pixels


def pixel255_to_frame(x: float, pixels: int = MOVING_MNIST.pixels) -> float:
    """Convert a per-pixel MSE on the 0-255 scale to an OpenSTL per-frame MSE.

    Args:
        x: Mean per-pixel squared error on the 0-255 scale.
        pixels: Values per frame, ``C * H * W`` (4096 for 1x64x64 Moving MNIST).

    Returns:
        ``x * pixels / 65025``.
    """
    return x * pixels / SCALE255_SQ
