"""Accuracy against cost: each trial's best val MSE against its FLOPs and its parameters, with the Pareto fronts.

A config is on a front when no other trial is at most as costly and at most as wrong, and strictly
better in one of the two. Fronts are drawn per family and across families; val MSE is used because
every trial has one (the test split is run on each family's best trial only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mmtune._num import as_finite, is_finite
from mmtune.experiment import best_row
from mmtune.report._plot import empty_figure, model_colors

_TITLE = "Accuracy against cost: best val MSE/frame of each trial"
COSTS = {"flops_per_sample": "GFLOPs per training sample", "params": "parameters (M)"}
_SCALE = {"flops_per_sample": 1e9, "params": 1e6}
NO_COST = ("results.parquet has no cost columns (params, flops_per_sample): the sweep ran before mmtune "
           "recorded what each trial costs, so accuracy cannot be set against cost; a new sweep records it")


class ParetoPoint(NamedTuple):
    """One trial: its family, best val MSE, its costs, and the fronts it is on."""

    trial_id: str
    model: str
    val_mse: float
    flops_per_sample: float
    params: float
    train_samples_per_s: float
    infer_ms_per_clip: float
    config: dict[str, Any]
    front: dict[str, bool]  # cost key -> on its family's front
    front_all: dict[str, bool]  # cost key -> on the front across families


class ParetoInfo(NamedTuple):
    """What the Pareto panel draws and lists."""

    models: list[str]
    points: list[ParetoPoint]
    notes: list[str]


def pareto_mask(costs: Sequence[float], errors: Sequence[float]) -> list[bool]:
    """Which of the (cost, error) points no other point dominates (both minimized).

    >>> pareto_mask([1, 2, 3, 2], [5, 3, 4, 3])
    [True, True, False, True]
    """
    pts = list(zip(costs, errors, strict=True))
    return [not any(c2 <= c and e2 <= e and (c2 < c or e2 < e) for c2, e2 in pts) for c, e in pts]


def _per_trial(results: pd.DataFrame) -> list[dict[str, Any]]:
    """One dict per trial with a finite best val MSE and its cost columns (best epoch's row)."""
    out = []
    for (model, tid), g in results.groupby(["model", "trial_id"], sort=True):
        best = best_row(g)
        if best is None:
            continue
        sps = pd.to_numeric(g.get("train_samples_per_s", pd.Series(dtype=float)), errors="coerce")
        out.append({
            "trial_id": str(tid), "model": str(model), "val_mse": float(best["val_mse"]),
            "flops_per_sample": as_finite(best.get("flops_per_sample")), "params": as_finite(best.get("params")),
            "train_samples_per_s": float(sps.median()) if sps.notna().any() else math.nan,
            "infer_ms_per_clip": as_finite(best.get("infer_ms_per_clip")),
            "config": {c.removeprefix("config/"): best[c] for c in g.columns
                       if c.startswith("config/") and c != "config/model" and not _missing(best[c])},
        })
    return out


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def get_pareto_info(results: pd.DataFrame, models: list[str]) -> ParetoInfo:
    """The points and fronts from results.parquet's rows (trials without cost columns are left out, and said)."""
    if results.empty:
        return ParetoInfo(models, [], ["no trial results yet"])
    if not any(c in results for c in COSTS):
        return ParetoInfo(models, [], [NO_COST])
    trials = _per_trial(results)
    notes = []
    costed = [t for t in trials if is_finite(t["flops_per_sample"]) and is_finite(t["params"])]
    if len(costed) < len(trials):
        notes.append(f"{len(trials) - len(costed)} of {len(trials)} trials recorded no cost "
                     f"(a sweep from before costs were recorded, or a trial that failed first)")
    fronts: dict[str, dict[str, bool]] = {t["trial_id"]: {} for t in costed}
    fronts_all: dict[str, dict[str, bool]] = {t["trial_id"]: {} for t in costed}
    for key in COSTS:
        for tid, on in zip([t["trial_id"] for t in costed],
                           pareto_mask([t[key] for t in costed], [t["val_mse"] for t in costed]), strict=True):
            fronts_all[tid][key] = on
        for model in {t["model"] for t in costed}:
            fam = [t for t in costed if t["model"] == model]
            for t, on in zip(fam, pareto_mask([t[key] for t in fam], [t["val_mse"] for t in fam]), strict=True):
                fronts[t["trial_id"]][key] = on
    points = [ParetoPoint(front=fronts[t["trial_id"]], front_all=fronts_all[t["trial_id"]], **t) for t in costed]
    return ParetoInfo(models, points, notes)


def draw_pareto(info: ParetoInfo) -> go.Figure:
    """Two panels (val MSE against FLOPs, against parameters, log x): trials as dots, fronts as steps."""
    if not info.points:
        return empty_figure(_TITLE, "; ".join(info.notes) or "no trial recorded its cost")
    fig = make_subplots(rows=1, cols=2, subplot_titles=list(COSTS.values()))
    colors = model_colors(info.models)
    for col, key in enumerate(COSTS, start=1):
        for model in info.models:
            pts = [p for p in info.points if p.model == model]
            if not pts:
                continue
            fig.add_scatter(
                x=[getattr(p, key) / _SCALE[key] for p in pts], y=[p.val_mse for p in pts], mode="markers",
                name=model, legendgroup=model, showlegend=col == 1, text=[p.trial_id for p in pts],
                marker=dict(color=colors[model], size=[11 if p.front[key] else 7 for p in pts],
                            line=dict(width=[2 if p.front_all[key] else 0 for p in pts], color="black")),
                hovertemplate=f"{model} %{{text}}<br>{COSTS[key]} %{{x:.3g}}<br>val MSE/frame %{{y:.2f}}<extra></extra>",
                row=1, col=col,
            )
            front = sorted((p for p in pts if p.front[key]), key=lambda p: getattr(p, key))
            fig.add_scatter(x=[getattr(p, key) / _SCALE[key] for p in front], y=[p.val_mse for p in front],
                            mode="lines", line=dict(color=colors[model], shape="hv", width=1), hoverinfo="skip",
                            legendgroup=model, showlegend=False, row=1, col=col)
        front = sorted((p for p in info.points if p.front_all[key]), key=lambda p: getattr(p, key))
        fig.add_scatter(x=[getattr(p, key) / _SCALE[key] for p in front], y=[p.val_mse for p in front],
                        mode="lines", line=dict(color="black", shape="hv", dash="dot"), name="front, all families",
                        legendgroup="front", showlegend=col == 1, hoverinfo="skip", row=1, col=col)
        fig.update_xaxes(type="log", title_text=COSTS[key], row=1, col=col)
    fig.update_yaxes(title_text="best val MSE/frame", row=1, col=1)
    fig.update_layout(title=_TITLE, height=440)
    return fig


def front_rows(info: ParetoInfo) -> list[ParetoPoint]:
    """The configs on any front (a family's or the overall one, against either cost), cheapest first."""
    on = [p for p in info.points if any(p.front.values()) or any(p.front_all.values())]
    return sorted(on, key=lambda p: (p.model, p.flops_per_sample))
