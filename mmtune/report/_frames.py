"""Predicted frames of the best trial of each model: a strip (PNG) and an animation (GIF)."""

from __future__ import annotations

import io
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from mmtune.report._load import Experiment
from mmtune.strips import strip_png_bytes

_SCALE = 3
_LABEL_H = 14


class FramesInfo(NamedTuple):
    """One test clip of one model: (T, H, W) arrays in [0, 1] ((T, C, H, W) for C > 1)."""

    model: str
    inputs: np.ndarray
    truth: np.ndarray
    pred: np.ndarray
    mse_frame: float  # of this clip, OpenSTL per-frame convention


def get_frames_info(exp: Experiment, model: str, clip: int = 0) -> FramesInfo | None:
    """The `clip`-th saved prediction of `model` (None if predictions/<model>.npz is absent)."""
    arrays = exp.predictions.get(model)
    if arrays is None:
        return None
    inputs, truth, pred = (np.clip(np.nan_to_num(a[min(clip, len(a) - 1)]), 0.0, 1.0) for a in arrays)
    per_frame = tuple(range(1, truth.ndim))  # (H, W), or (C, H, W)
    mse = float(((pred - truth) ** 2).sum(axis=per_frame).mean())
    return FramesInfo(model, inputs, truth, pred, mse)


def strip_png(info: FramesInfo) -> bytes:
    """Input / truth / prediction / |error| rows as PNG bytes."""
    return strip_png_bytes(info.inputs, info.truth, info.pred)


def _panel(frame: np.ndarray, label: str) -> Image.Image:
    if frame.ndim == 3:  # (C, H, W): the animation is grey, the channels' mean (the strip shows each)
        frame = frame.mean(axis=0)
    img = Image.fromarray(np.clip(frame * 255.0 + 0.5, 0, 255).astype(np.uint8))
    img = img.resize((img.width * _SCALE, img.height * _SCALE), Image.Resampling.NEAREST)
    out = Image.new("L", (img.width, img.height + _LABEL_H), 40)
    out.paste(img, (0, _LABEL_H))
    ImageDraw.Draw(out).text((3, 1), label, fill=230)
    return out


def animation_gif(info: FramesInfo, ms_per_frame: int = 250) -> bytes:
    """A looping GIF: the inputs play on both sides, then prediction (left) beside truth (right)."""
    t_in, t_out = len(info.inputs), len(info.truth)
    frames = []
    for t in range(t_in + t_out):
        if t < t_in:
            left = _panel(info.inputs[t], f"input t-{t_in - 1 - t}")
            right = _panel(info.inputs[t], f"input t-{t_in - 1 - t}")
        else:
            k = t - t_in
            left = _panel(info.pred[k], f"prediction t+{k + 1}")
            right = _panel(info.truth[k], f"truth t+{k + 1}")
        canvas = Image.new("L", (left.width * 2 + 6, left.height), 96)
        canvas.paste(left, (0, 0))
        canvas.paste(right, (left.width + 6, 0))
        frames.append(canvas.convert("P"))
    durations = [ms_per_frame] * (len(frames) - 1) + [ms_per_frame * 4]  # pause on the last frame
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return buf.getvalue()
