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
    """One clip's strip as a uint8 image: 4 rows (input, truth, prediction, error) of T frames.

    Args:
        inputs, truth, pred: (T, H, W) arrays in [0, 1].
    """
    rows = [inputs, truth, pred, np.abs(pred - truth)]
    t, h, w = truth.shape
    canvas = np.full((4 * h + 3 * _GAP, t * w + (t - 1) * _GAP), 96, np.uint8)
    for r, frames in enumerate(rows):
        for c in range(min(t, len(frames))):
            y, x = r * (h + _GAP), c * (w + _GAP)
            canvas[y : y + h, x : x + w] = np.clip(frames[c] * 255.0 + 0.5, 0, 255).astype(np.uint8)
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
