"""Predicted-frame strips: rows of input / ground truth / prediction / |error| as one PNG.

Neutral ground: training writes them (strip.png, TensorBoard images) and the report inlines them,
so neither imports the other.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from mmtune._io import atomic_write_bytes

_GAP = 2  # px of grey between frames and rows


def strip_array(inputs: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """One clip's strip as a uint8 image: rows (input, truth, prediction, error) of T frames.

    Frames of one channel are grey, of three channels RGB ((H, W, 3) image); any other channel
    count gives each channel its own grey row (4 * C rows).

    Args:
        inputs, truth, pred: (T, H, W) or (T, C, H, W) arrays in [0, 1].
    """
    rows = [inputs, truth, pred, np.abs(pred - truth)]
    if truth.ndim == 4 and truth.shape[1] == 1:
        rows = [r[:, 0] for r in rows]
    elif truth.ndim == 4 and truth.shape[1] != 3:  # a grey row per channel
        rows = [r[:, c] for r in rows for c in range(truth.shape[1])]
    rgb = rows[0].ndim == 4  # (T, 3, H, W)
    t, h, w = truth.shape[0], truth.shape[-2], truth.shape[-1]
    shape = (len(rows) * h + (len(rows) - 1) * _GAP, t * w + (t - 1) * _GAP) + ((3,) if rgb else ())
    canvas = np.full(shape, 96, np.uint8)
    for r, frames in enumerate(rows):
        for c in range(min(t, len(frames))):
            y, x = r * (h + _GAP), c * (w + _GAP)
            frame = np.moveaxis(frames[c], 0, -1) if rgb else frames[c]  # (H, W, 3) or (H, W)
            canvas[y : y + h, x : x + w] = np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return canvas


def save_strip(inputs: np.ndarray, truth: np.ndarray, pred: np.ndarray, path: str | Path, scale: int = 2) -> Path:
    """Write the strip of one clip as a PNG (upscaled by `scale`, nearest neighbour), atomically."""
    return atomic_write_bytes(strip_png_bytes(inputs, truth, pred, scale), path)


def strip_png_bytes(inputs: np.ndarray, truth: np.ndarray, pred: np.ndarray, scale: int = 2) -> bytes:
    """The same strip as PNG bytes (for inline images in the HTML report)."""
    img = Image.fromarray(strip_array(inputs, truth, pred))
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
