"""Val-MSE learning curves of every trial, coloured by model; ASHA-stopped and diverged trials marked."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import plotly.graph_objects as go

from mmtune.experiment import Outcome
from mmtune.report._leaderboard import MSE_FRAME_LABEL
from mmtune.report._load import Experiment, trial_table
from mmtune.report._plot import empty_figure, model_colors

DIVERGED, FAILED, RUNNING, STOPPED_EARLY = Outcome.DIVERGED, Outcome.FAILED, Outcome.RUNNING, Outcome.STOPPED_EARLY
CUT = Outcome.CUT_AT_BUDGET

_TITLE = "Validation MSE by epoch, every trial"


class CurveTrace(NamedTuple):
    """One trial's curve; `val_mse` is NaN at epochs where it diverged."""

    trial_id: str
    model: str
    outcome: Outcome
    epochs: list[int]
    val_mse: list[float]
    last_finite_epoch: int | None  # where the end marker goes (None: no finite value at all)


class CurvesInfo(NamedTuple):
    """What the learning-curve figure draws."""

    models: list[str]
    traces: list[CurveTrace]
    notes: list[str]


def get_curves_info(exp: Experiment) -> CurvesInfo:
    """One curve per trial from results.parquet, with its outcome."""
    df = exp.results
    if df.empty:
        return CurvesInfo(exp.models, [], ["No per-epoch results (results.parquet missing or empty)."])
    table = trial_table(df)
    outcome = dict(zip(table["trial_id"], table["outcome"], strict=True))
    traces = []
    for (model, tid), g in df.groupby(["model", "trial_id"], sort=True):
        vals = [float(v) for v in g["val_mse"]]
        epochs = [int(e) for e in g["epoch"]]
        ok = [e for e, v in zip(epochs, vals, strict=True) if math.isfinite(v)]
        traces.append(CurveTrace(str(tid), str(model), outcome[str(tid)], epochs, vals, ok[-1] if ok else None))
    notes = []
    never = [t.trial_id for t in traces if t.last_finite_epoch is None]
    if never:
        notes.append(f"{len(never)} trial(s) never produced a finite val MSE and have no curve: {', '.join(never)}.")
    n_asha = sum(t.outcome == STOPPED_EARLY for t in traces)
    if n_asha:
        notes.append(f"{n_asha} trial(s) were stopped early by ASHA (dashed, ending in ×): their values were "
                     "reached on a shorter budget than the trials that ran to the end.")
    n_cut = sum(t.outcome == CUT for t in traces)
    if n_cut:
        notes.append(f"{n_cut} trial(s) were cut when the sweep's time budget ran out (dash-dot): they keep "
                     "the checkpoint of their last finished epoch.")
    return CurvesInfo(exp.models, traces, notes)


def draw_curves(info: CurvesInfo) -> go.Figure:
    """Lines per trial; dashed with an × end marker if ASHA stopped it, a red ✕ where it diverged."""
    drawable = [t for t in info.traces if t.last_finite_epoch is not None]
    if not drawable:
        return empty_figure(_TITLE, "no trial has a finite val MSE yet")
    colors = model_colors(info.models)
    fig = go.Figure()
    shown: set[str] = set()
    for t in drawable:
        assert t.last_finite_epoch is not None  # drawable ones have one
        dash = {STOPPED_EARLY: "dash", RUNNING: "dot", CUT: "dashdot"}.get(t.outcome, "solid")
        fig.add_scatter(
            x=t.epochs, y=t.val_mse, mode="lines+markers", line=dict(color=colors[t.model], dash=dash, width=1.5),
            marker=dict(size=4), name=t.model, legendgroup=t.model, showlegend=t.model not in shown,
            connectgaps=False, hovertemplate=f"{t.model} {t.trial_id} ({t.outcome.label})<br>epoch %{{x}}"
                                             f"<br>val MSE/frame %{{y:.2f}}<extra></extra>",
        )
        shown.add(t.model)
        end_y = t.val_mse[t.epochs.index(t.last_finite_epoch)]
        if t.outcome == STOPPED_EARLY:
            fig.add_scatter(x=[t.last_finite_epoch], y=[end_y], mode="markers", legendgroup="asha",
                            marker=dict(symbol="x", size=10, color=colors[t.model], line=dict(width=1)),
                            showlegend=False, hoverinfo="skip")
        elif t.outcome in (DIVERGED, FAILED):
            fig.add_scatter(x=[t.last_finite_epoch], y=[end_y], mode="markers", legendgroup="bad",
                            marker=dict(symbol="x-thin-open" if t.outcome == FAILED else "x", size=12,
                                        color="#d62728", line=dict(width=2, color="#d62728")),
                            showlegend=False, hoverinfo="skip")
    # Legend entries for the line styles (no data of their own).
    outcomes = {t.outcome for t in drawable}
    styles = [(STOPPED_EARLY, "stopped early by ASHA (dashed, ×)", dict(dash="dash", color="#555"),
               dict(symbol="x", size=10, color="#555")),
              (DIVERGED, "diverged: NaN after this epoch (red ✕)", dict(color="rgba(0,0,0,0)"),
               dict(symbol="x", size=12, color="#d62728")),
              (FAILED, "failed with an error (red ✕)", dict(color="rgba(0,0,0,0)"),
               dict(symbol="x-thin-open", size=12, color="#d62728", line=dict(width=2, color="#d62728"))),
              (RUNNING, "still running (dotted)", dict(dash="dot", color="#555"), dict(size=1)),
              (CUT, "cut at the time budget (dash-dot)", dict(dash="dashdot", color="#555"), dict(size=1))]
    for outcome, label, line, marker in styles:
        if outcome in outcomes:
            fig.add_scatter(x=[None], y=[None], mode="lines+markers", name=label, line=line, marker=marker)
    ys = np.array([v for t in drawable for v in t.val_mse if math.isfinite(v)])
    log = bool(len(ys)) and bool(ys.min() > 0) and ys.max() / ys.min() > 5
    fig.update_xaxes(dtick=1 if max(len(t.epochs) for t in drawable) <= 20 else None)
    fig.update_layout(title=_TITLE, xaxis_title="epoch", yaxis_title=f"val {MSE_FRAME_LABEL}", height=480,
                      yaxis_type="log" if log else "linear", legend=dict(groupclick="toggleitem"))
    if log:
        fig.update_yaxes(tickvals=_log_ticks(float(ys.min()), float(ys.max())))
    return fig


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks from below `lo` to above `hi` (plotly's own log ticks read "2, 3, 5" without the decade)."""
    ticks = [m * 10.0**e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
             for m in (1, 2, 5)]
    inside = [t for t in ticks if lo / 2 <= t <= hi * 2]
    return inside or ticks
