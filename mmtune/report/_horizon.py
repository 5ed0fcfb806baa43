"""Test MSE (and SSIM) against the forecast horizon t+1…t+10 for the best trial of each model."""

from __future__ import annotations

from typing import NamedTuple

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mmtune._num import is_finite
from mmtune.metrics.units import frame_to_pixel255
from mmtune.report._leaderboard import MSE_FRAME_LABEL
from mmtune.report._load import Experiment
from mmtune.report._plot import empty_figure, model_colors

_TITLE = "Test error against horizon, best trial of each model"


class HorizonLine(NamedTuple):
    """One model's per-step test metrics (step k is the prediction of frame t+k)."""

    mse_frame: list[float]
    mse_pixel255: list[float]
    ssim: list[float] | None


class HorizonInfo(NamedTuple):
    """What the horizon figure draws."""

    models: list[str]  # every model, for the colours
    lines: dict[str, HorizonLine]
    notes: list[str]


def _floats(x: object) -> list[float] | None:
    if not isinstance(x, list) or not x or not all(is_finite(v) for v in x):
        return None
    return [float(v) for v in x]


def get_horizon_info(exp: Experiment) -> HorizonInfo:
    """Per-step metrics from test_metrics.json (pixel255 is converted from frame MSE if absent)."""
    lines: dict[str, HorizonLine] = {}
    notes: list[str] = []
    for model in exp.models:
        tested = exp.test_metrics.get(model)
        test = (tested.test if tested else None) or {}
        frame = _floats(test.get("mse_frame_per_step"))
        if frame is None:
            notes.append(f"{model}: no per-step test MSE (not tested, or no completed trial).")
            continue
        pixel = _floats(test.get("mse_pixel255_per_step")) or [frame_to_pixel255(v) for v in frame]
        lines[model] = HorizonLine(frame, pixel, _floats(test.get("ssim_per_step")))
    return HorizonInfo(exp.models, lines, notes)


def draw_horizon(info: HorizonInfo) -> go.Figure:
    """MSE/frame per step (hover: MSE/pixel too) and, where recorded, SSIM per step."""
    if not info.lines:
        return empty_figure(_TITLE, "no per-step test metrics yet")
    with_ssim = any(line.ssim for line in info.lines.values())
    fig = make_subplots(rows=1, cols=2 if with_ssim else 1, subplot_titles=(
        [f"test {MSE_FRAME_LABEL}", "test SSIM"] if with_ssim else [f"test {MSE_FRAME_LABEL}"]))
    colors = model_colors(info.models)
    for model, line in info.lines.items():
        steps = [f"t+{k}" for k in range(1, len(line.mse_frame) + 1)]
        fig.add_scatter(x=steps, y=line.mse_frame, customdata=line.mse_pixel255, name=model, legendgroup=model,
                        line=dict(color=colors[model]), mode="lines+markers", row=1, col=1,
                        hovertemplate=f"{model} %{{x}}<br>MSE/frame %{{y:.2f}}"
                                      "<br>MSE/pixel (0–255) %{customdata:.1f}<extra></extra>")
        if line.ssim:
            fig.add_scatter(x=steps, y=line.ssim, name=model, legendgroup=model, showlegend=False,
                            line=dict(color=colors[model]), mode="lines+markers", row=1, col=2)
    fig.update_layout(title=_TITLE, height=420)
    fig.update_xaxes(title_text="predicted frame")
    return fig
