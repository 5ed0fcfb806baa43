"""ConvTAU with optical-flow channels against without: best val MSE per flow choice."""

from __future__ import annotations

import math
from typing import NamedTuple

import plotly.graph_objects as go

from mmtune.report._leaderboard import MSE_FRAME_LABEL
from mmtune.report._load import Experiment, trial_table
from mmtune.report._plot import empty_figure

_TITLE = "Flow against no flow (ConvTAU), best val MSE per choice"


class FlowChoice(NamedTuple):
    """The trials of one flow setting."""

    choice: str
    n_trials: int
    n_with_result: int
    best_val_mse: float  # NaN if none of them produced a finite val MSE
    best_trial: str | None
    best_epoch: int | None  # the epoch the best value was reached at
    best_outcome: str | None  # its Outcome's label, e.g. stopped early (ASHA): a value from a shorter budget


class FlowInfo(NamedTuple):
    """What the flow comparison draws; `choices` has 2+ entries only when the sweep tried both."""

    param: str | None
    model: str | None
    choices: list[FlowChoice]
    note: str | None


def get_flow_info(exp: Experiment) -> FlowInfo:
    """Group the trials of the model that has a `*flow` parameter (a model's own one first) by its value."""
    trials = trial_table(exp.results)
    cols = [c for c in trials.columns if c.startswith("config/") and c.rsplit(".", 1)[-1].endswith("flow")
            and trials[c].notna().any()]
    if not cols:
        return FlowInfo(None, None, [], "The sweep did not search a flow parameter.")
    # A model's own flow parameter (config/MODEL.flow: only a model that takes flow has one) first; else
    # the shared one, for the first model whose trials tried more than one value of it.
    col = next((c for c in cols if "." in c[len("config/"):]), cols[0])
    sub = trials[trials[col].notna()]
    models = list(sub["model"].unique())
    own = col[len("config/"):].split(".", 1)[0] if "." in col[len("config/"):] else None
    model = own if own in models else next(
        (m for m in models if sub.loc[sub["model"] == m, col].astype(str).nunique() > 1), models[0])
    sub = sub[sub["model"] == model]
    choices = []
    for choice, g in sub.groupby(sub[col].astype(str), sort=True):
        ok = g[g["best_val_mse"].notna()]
        best = ok.loc[ok["best_val_mse"].idxmin()] if len(ok) else None
        choices.append(FlowChoice(
            str(choice), len(g), len(ok), float(best["best_val_mse"]) if best is not None else math.nan,
            str(best["trial_id"]) if best is not None else None,
            int(best["best_epoch"]) if best is not None and best["best_epoch"] is not None else None,
            best["outcome"].label if best is not None else None))
    note = None
    if len(choices) < 2:
        note = f"The sweep tried only {col[len('config/'):]} = {choices[0].choice}: nothing to compare."
    elif sum(c.n_with_result > 0 for c in choices) < 2:
        note = "Only one flow choice has a trial with a finite val MSE: nothing to compare yet."
    elif len({c.best_epoch for c in choices if c.best_epoch is not None}) > 1:
        note = ("The best trials of the choices reached their values at different epochs ("
                + ", ".join(f"{c.choice}: epoch {c.best_epoch}, {c.best_outcome}" for c in choices
                            if c.best_epoch is not None)
                + "): a trial ASHA stopped early had a shorter budget, so compare with care.")
    return FlowInfo(col[len("config/"):], model, choices, note)


def draw_flow(info: FlowInfo) -> go.Figure:
    """One bar per flow choice; the hover names the best trial and the trial counts."""
    ok = [c for c in info.choices if math.isfinite(c.best_val_mse)]
    if len(info.choices) < 2 or not ok:
        return empty_figure(_TITLE, info.note or "nothing to compare")
    fig = go.Figure(go.Bar(
        x=[c.choice for c in ok], y=[c.best_val_mse for c in ok],
        text=[f"{c.best_val_mse:.2f} (epoch {c.best_epoch})" for c in ok], textposition="outside",
        customdata=[[c.best_trial, c.n_with_result, c.n_trials] for c in ok],
        hovertemplate="%{x}: %{y:.2f}<br>best trial %{customdata[0]}"
                      "<br>%{customdata[1]} of %{customdata[2]} trials with a result<extra></extra>",
    ))
    fig.update_layout(title=_TITLE, xaxis_title=info.param, yaxis_title=f"best val {MSE_FRAME_LABEL}", height=380)
    return fig
