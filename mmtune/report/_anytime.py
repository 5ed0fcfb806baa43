"""Anytime performance: a run's best val MSE so far, against the seconds since it started and the training
FLOPs it had spent, with other runs beside it (the no-search run, random search at the same budget).

Every row of results.parquet counts, in the order it was reported: each trial's epochs, the ones ASHA
stopped and the diverged ones included (their training was spent), and the final phase's. The best so
far is the minimum of the finite val MSEs reported up to then.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mmtune.data.datasets import ARRAY_KEYS, DataConfig
from mmtune.experiment import FLOPS, SweepMeta
from mmtune.report._load import Experiment
from mmtune.report._plot import empty_figure, run_colors
from mmtune.report._summary import _timestamp
from mmtune.search.algorithms import DEFAULT_SAMPLER, DEFAULT_SCHEDULER

TITLE = "Anytime: best validation MSE so far"
Y_LABEL = "best val mse_frame so far (per-frame MSE, OpenSTL)"
X_SECONDS = "seconds since the sweep started (s)"
X_FLOPS = "training FLOPs so far (every trial and the final phase)"
_NAMES = {"tpe": "TPE", "random": "random", "cmaes": "CMA-ES", "asha": "ASHA", "fifo": "FIFO"}


class AnytimeInfo(NamedTuple):
    """One run's best-so-far curve: a point per reported row, from the first finite val MSE on."""

    name: str  # the experiment's name
    label: str  # what the run was, e.g. "search (TPE + ASHA) + final phase"
    x_seconds: list[float]  # when the row was reported, in seconds since the sweep started
    x_flops: list[float]  # training FLOPs spent up to that row, all rows before it included; [] if not counted
    best_val_mse: list[float]  # running minimum of the finite val MSEs (mse_frame)
    final: list[bool]  # the row came from the final phase
    trial_ids: list[str]  # the trial that reported the row
    total_flops: float  # all the training the run did, in FLOPs (NaN if not counted)
    notes: list[str]


def run_label(meta: SweepMeta | None) -> str:
    """What a run was, from sweep.json's args and final phase.

    >>> run_label(None)
    'unknown run (no sweep.json)'
    """
    if meta is None:
        return "unknown run (no sweep.json)"
    args, final = meta.args or {}, meta.final or {}
    if args.get("no_search") or final.get("no_search"):
        return "no search: the space's default config"
    sampler = str(args.get("sampler") or DEFAULT_SAMPLER)
    scheduler = str(args.get("scheduler") or DEFAULT_SCHEDULER)
    search = f"{_NAMES.get(sampler, sampler)} + {_NAMES.get(scheduler, scheduler)}"
    return f"search ({search}) + final phase" if final.get("ran") else search


def _start(meta: SweepMeta | None) -> float:
    """The sweep's first start in seconds since the epoch (NaN without sweep.json or an unreadable time)."""
    if meta is None:
        return math.nan
    return _timestamp(meta.runs[0].started if meta.runs else meta.started)


def get_anytime_info(results: pd.DataFrame, sweep_meta: SweepMeta | None, *, train_size: int | None = None,
                     name: str | None = None) -> AnytimeInfo:
    """The best val MSE so far of one run, at each row it reported, in time order.

    Args:
        results: results.parquet's rows (`read_results`), one per trial x epoch.
        sweep_meta: sweep.json (its start, its args and final phase name the run); None if absent.
        train_size: clips per epoch where a row does not say (`train_samples` NaN: a sweep from before
            it was recorded); None: such rows leave the FLOPs axis out.
        name: the run's name (default: sweep.json's, else "run").

    Returns:
        The points to draw; with no usable row, empty lists and a note.
    """
    name = name or (sweep_meta.name if sweep_meta else "run")
    label = run_label(sweep_meta)
    if results.empty or "timestamp" not in results or "val_mse" not in results:
        return AnytimeInfo(name, label, [], [], [], [], [], math.nan, ["no per-epoch results with a report time"])
    df = results.assign(timestamp=pd.to_numeric(results["timestamp"], errors="coerce"))
    df = df[df["timestamp"].notna()].sort_values("timestamp", kind="stable").reset_index(drop=True)
    if df.empty:  # only trials that failed before reporting anything
        return AnytimeInfo(name, label, [], [], [], [], [], math.nan,
                           ["no row of results.parquet has a report time"])
    notes: list[str] = []
    start = _start(sweep_meta)
    if not math.isfinite(start):
        total = pd.to_numeric(df.get("time_total_s", pd.Series(0.0, index=df.index)), errors="coerce").fillna(0.0)
        start = float((df["timestamp"] - total).min())
        notes.append("no start time in sweep.json: seconds are counted from the first trial's start")
    seconds = (df["timestamp"] - start).to_numpy(dtype=float)
    if (seconds < 0).any():
        notes.append(f"{int((seconds < 0).sum())} row(s) were reported before the sweep's start time "
                     "(the clocks of the machines disagree): they are drawn at negative seconds")
    vals = pd.to_numeric(df["val_mse"], errors="coerce").to_numpy(dtype=float)
    best = np.fmin.accumulate(np.where(np.isfinite(vals), vals, np.nan))  # fmin skips the NaNs
    flops, flops_notes = _cumulative_flops(df, train_size)
    notes += flops_notes
    keep = np.isfinite(best)
    if not keep.any():
        notes.append("no row has a finite val MSE: every trial diverged or failed")
    phase = df["phase"].astype(str) if "phase" in df else pd.Series("search", index=df.index)
    return AnytimeInfo(
        name=name, label=label,
        x_seconds=[float(s) for s in seconds[keep]],
        x_flops=[float(f) for f in flops[keep]] if flops is not None else [],
        best_val_mse=[float(b) for b in best[keep]],
        final=[bool(f) for f in (phase == "final").to_numpy()[keep]],
        trial_ids=[str(t) for t in df["trial_id"].to_numpy()[keep]],
        total_flops=float(flops[-1]) if flops is not None else math.nan,
        notes=notes,
    )


def _cumulative_flops(df: pd.DataFrame, train_size: int | None) -> tuple[np.ndarray | None, list[str]]:
    """FLOPs per clip x clips trained, summed over the rows in their order; None (and why) if not countable."""
    flops = pd.to_numeric(df[FLOPS], errors="coerce") if FLOPS in df else pd.Series(math.nan, index=df.index)
    if not flops.notna().any():
        return None, [f"results.parquet has no {FLOPS} (a sweep from before costs were recorded): "
                      "the FLOPs axis leaves this run out"]
    clips = (pd.to_numeric(df["train_samples"], errors="coerce") if "train_samples" in df
             else pd.Series(math.nan, index=df.index))
    notes = []
    if clips.isna().any():
        if train_size is None:
            return None, ["results.parquet does not say how many clips each epoch trained on, nor the data's "
                          "train_size: the FLOPs axis leaves this run out"]
        notes.append(f"{int(clips.isna().sum())} row(s) do not say how many clips they trained on (a sweep from "
                     f"before it was recorded): each counts the data's train_size, {train_size} clips")
        clips = clips.fillna(float(train_size))
    per_row = (flops * clips).to_numpy(dtype=float)
    missing = ~np.isfinite(per_row)
    if missing.any():
        notes.append(f"{int(missing.sum())} of {len(per_row)} rows have no {FLOPS}: counted as 0, so the "
                     "FLOPs axis undercounts")
    return np.cumsum(np.where(missing, 0.0, per_row)), notes


def data_train_size(exp: Experiment) -> int | None:
    """Clips per epoch of the experiment's trials: the protocol's train_size, else the space's, else DataConfig's."""
    data = dict(exp.space.get("data") or {}) if isinstance(exp.space, dict) else {}
    if exp.sweep is not None and exp.sweep.protocol:
        data.update(exp.sweep.protocol.get("data") or {})
    if any(data.get(k) for k in ARRAY_KEYS):  # an array file: its window count is in each epoch's train_samples
        return None
    size = data.get("train_size", DataConfig.__dataclass_fields__["train_size"].default)
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def anytime_of(exp: Experiment) -> AnytimeInfo:
    """`get_anytime_info` of a loaded experiment."""
    return get_anytime_info(exp.results, exp.sweep, train_size=data_train_size(exp), name=exp.name)


def _legend(info: AnytimeInfo, many: bool) -> str:
    return f"{info.label} ({info.name})" if many else info.label


def draw_anytime(infos: Sequence[AnytimeInfo]) -> go.Figure:
    """Best val MSE so far against seconds (left) and cumulative training FLOPs (right, log x), as steps;
    one trace per run and panel, the final phase's points as diamonds."""
    drawable = [i for i in infos if i.x_seconds]
    if not drawable:
        notes = [f"{i.name}: {n}" if len(infos) > 1 else n for i in infos for n in i.notes]
        return empty_figure(TITLE, "; ".join(notes) or "no run to draw")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["against wall-clock time", "against training compute"])
    many = len(infos) > 1
    for info, color in zip(infos, run_colors(len(infos)), strict=True):
        if not info.x_seconds:
            continue
        marker: dict[str, Any] = dict(color=color, symbol="diamond", size=[9 if f else 0 for f in info.final])
        where = [f"{t} ({'final phase' if f else 'search'})" for t, f in zip(info.trial_ids, info.final, strict=True)]
        axes = [(1, info.x_seconds, "%{x:.0f} s")]
        if info.x_flops:
            axes.append((2, info.x_flops, "%{x:.3g} FLOPs"))
        for col, xs, x_hover in axes:
            fig.add_scatter(
                x=xs, y=info.best_val_mse, mode="lines+markers", line=dict(shape="hv", color=color, width=2),
                marker=marker, name=_legend(info, many), legendgroup=info.name + info.label, showlegend=col == 1,
                text=where,
                hovertemplate=f"{_legend(info, many)}<br>{x_hover}<br>best val mse_frame %{{y:.2f}}"
                              "<br>row of %{text}<extra></extra>",
                row=1, col=col,
            )
    if any(any(i.final) for i in drawable):  # a legend entry for the markers (no data of its own)
        fig.add_scatter(x=[None], y=[None], mode="markers", name="final phase (diamonds)",
                        marker=dict(symbol="diamond", size=9, color="#555"))
    if not any(i.x_flops for i in drawable):
        fig.add_annotation(text="no run recorded its training FLOPs", x=0.5, y=0.5, xref="x2 domain",
                           yref="y2 domain", showarrow=False, font=dict(size=13, color="#666"))
    fig.update_xaxes(title_text=X_SECONDS, row=1, col=1)
    fig.update_xaxes(title_text=X_FLOPS, type="log", row=1, col=2)
    fig.update_yaxes(title_text=Y_LABEL, row=1, col=1)
    fig.update_yaxes(title_text=Y_LABEL, row=1, col=2)
    fig.update_layout(title=TITLE, height=460, legend=dict(orientation="h", y=-0.25))
    return fig


__all__ = ["AnytimeInfo", "anytime_of", "data_train_size", "draw_anytime", "get_anytime_info", "run_label"]
