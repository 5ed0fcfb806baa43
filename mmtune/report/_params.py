"""Hyperparameters against val MSE: parallel coordinates and Optuna importances, per model family.

Per model because the search space is conditional: a ConvTAU parameter does not exist for a
SimpleLSTM trial, and mixing families would compare parameters that were never set.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from mmtune.errors import MMTuneError
from mmtune.experiment import Outcome
from mmtune.report._leaderboard import MSE_FRAME_LABEL
from mmtune.report._load import Experiment, trial_table
from mmtune.report._plot import empty_figure
from mmtune.search.params import space_params

_LOG_RATIO = 100.0  # a positive parameter spanning this factor or more is drawn (and sampled) in log10
_UNSET = "(unset)"
_FEW_TRIALS = 10  # below this many trials an importance is little more than noise


class ParamAxis(NamedTuple):
    """One axis of the parallel-coordinates plot."""

    name: str
    label: str  # the name, or log10(name)
    values: list[float]  # one per trial (categories as their index)
    ticktext: list[str] | None  # the category names, for a categorical parameter


class ParallelInfo(NamedTuple):
    """Parallel coordinates of one model: its varying parameters, then best val MSE."""

    model: str
    trial_ids: list[str]
    axes: list[ParamAxis]
    val_mse: list[float]
    note: str | None


class ImportanceInfo(NamedTuple):
    """Optuna hyperparameter importances of one model."""

    model: str
    importances: dict[str, float]  # parameter -> normalised importance, largest first
    evaluator: str
    n_trials: int
    note: str | None


def _model_params(trials: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The config/ columns of these trials that vary, and those skipped because some trials lack them."""
    varying, partial = [], []
    for c in trials.columns:
        if not c.startswith("config/") or c == "config/model":
            continue
        col = trials[c]
        if col.isna().all():
            continue
        if col.astype(str).nunique(dropna=False) < 2:
            continue
        if col.isna().any() and pd.api.types.is_numeric_dtype(col):
            partial.append(c[len("config/"):])
            continue
        varying.append(c)
    return varying, partial


def _is_categorical(col: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)


def _completed(exp: Experiment, model: str) -> pd.DataFrame:
    t = trial_table(exp.results)
    return t[(t["model"] == model) & t["best_val_mse"].notna()].reset_index(drop=True)


def get_parallel_info(exp: Experiment, model: str) -> ParallelInfo:
    """The varying parameters of `model`'s trials that produced a finite val MSE."""
    trials = _completed(exp, model)
    if len(trials) < 2:
        return ParallelInfo(model, [], [], [], f"{model}: {len(trials)} trial(s) with a finite val MSE; "
                                                 "parallel coordinates need 2 or more.")
    cols, partial = _model_params(trials)
    axes = []
    for c in cols:
        name = c[len("config/"):]
        col = trials[c]
        if _is_categorical(col):
            cats = sorted({_UNSET if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in col})
            vals = [cats.index(_UNSET if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
                    for v in col]
            axes.append(ParamAxis(name, name, [float(v) for v in vals], cats))
            continue
        x = col.to_numpy(dtype=float)
        if x.min() > 0 and x.max() / x.min() >= _LOG_RATIO:
            axes.append(ParamAxis(name, f"log10({name})", list(np.log10(x)), None))
        else:
            axes.append(ParamAxis(name, name, list(x), None))
    note = None
    if not axes:
        note = f"{model}: no parameter varied across its {len(trials)} trials."
    if partial:
        note = (note + " " if note else "") + f"Left out (not set in every trial): {', '.join(partial)}."
    return ParallelInfo(model, list(trials["trial_id"]), axes, list(trials["best_val_mse"].astype(float)), note)


def draw_parallel(info: ParallelInfo) -> go.Figure:
    """Parallel coordinates coloured by val MSE (darker is better)."""
    title = f"{info.model}: hyperparameters vs best val MSE"
    if not info.axes:
        return empty_figure(title, info.note or "nothing to draw")
    dims = []
    for a in info.axes:
        d: dict[str, Any] = dict(label=a.label, values=a.values)
        if a.ticktext is not None:
            d.update(tickvals=list(range(len(a.ticktext))), ticktext=a.ticktext,
                     range=[-0.5, len(a.ticktext) - 0.5])
        dims.append(d)
    dims.append(dict(label="val MSE/frame", values=info.val_mse))
    fig = go.Figure(go.Parcoords(
        dimensions=dims,
        line=dict(color=info.val_mse, colorscale="Viridis", showscale=True,
                  colorbar=dict(title="val MSE/frame")),
    ))
    fig.update_layout(title=title, height=420, margin=dict(l=80, r=80, t=90))
    return fig


def _space_distributions(exp: Experiment, model: str) -> dict[str, Any]:
    """The distributions `model`'s trials were sampled from, read from the sweep's space.yaml by
    the space parser's own `parse_param` (`search.params.space_params`); {} without the file."""
    if not exp.space:
        return {}
    try:
        return {n: p.distribution() for n, p in space_params(exp.space, model).items()}
    except MMTuneError:  # a file the parser refuses: the study's or the values' distributions instead
        return {}


def _study_distributions(path: Path | None, name: str) -> dict[str, Any]:
    """Parameter distributions from the sweep's Optuna study, where study.db opens (else {})."""
    if path is None:
        return {}
    try:
        import optuna

        storage = f"sqlite:///{path.resolve()}"
        names = optuna.get_all_study_names(storage)
        study_name = name if name in names else (names[0] if len(names) == 1 else None)
        if study_name is None:
            return {}
        dists: dict[str, Any] = {}
        for t in optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False):
            dists.update(t.distributions)
        return dists
    except Exception:  # a locked, partial or foreign database: infer the distributions instead
        return {}


def _infer_distribution(col: pd.Series) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    present = col.dropna()
    if _is_categorical(col):
        return CategoricalDistribution(sorted({_native(v) for v in present}, key=str))
    x = present.to_numpy(dtype=float)
    lo, hi = float(x.min()), float(x.max())
    if pd.api.types.is_integer_dtype(present) or np.all(x == np.round(x)):
        return IntDistribution(int(lo), int(hi))
    return FloatDistribution(lo, hi, log=bool(lo > 0 and hi / lo >= _LOG_RATIO))


def _native(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _rebuilt_study(exp: Experiment, model: str, trials: pd.DataFrame, cols: list[str]) -> Any:
    """An in-memory Optuna study of `model`'s trials, each with its best val MSE, over `cols`' parameters."""
    import optuna

    # space.yaml first (what the sweep sampled from), then study.db; only a parameter neither holds
    # (a sweep of an older mmtune, say) gets a distribution inferred from its values.
    known = {**_study_distributions(exp.study_path, exp.name), **_space_distributions(exp, model)}
    dists = {c[len("config/"):]: known.get(c[len("config/"):]) or _infer_distribution(trials[c]) for c in cols}
    study = optuna.create_study(direction="minimize", study_name=f"{exp.name}-{model}")
    for _, t in trials.iterrows():
        params, used = {}, {}
        for c in cols:
            name, v = c[len("config/"):], _native(t[c])
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            d = dists[name]
            if isinstance(d, optuna.distributions.CategoricalDistribution) and v not in d.choices:
                d = _infer_distribution(trials[c])
                dists[name] = d
            params[name], used[name] = v, d
        try:
            study.add_trial(optuna.trial.create_trial(params=params, distributions=used,
                                                      value=float(t["best_val_mse"])))
        except ValueError:  # a value outside a distribution taken from study.db: skip that trial
            continue
    return study


def get_importance_info(exp: Experiment, model: str) -> ImportanceInfo:
    """Importances of `model`'s parameters for its best val MSE, from an in-memory Optuna study.

    The study is rebuilt from results.parquet (best val MSE over all epochs per trial), not taken
    from study.db: OptunaSearch records an ASHA-stopped trial's *last* value, not its best. The
    parameter distributions come from space.yaml (else study.db, else the values).
    """
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = _completed(exp, model)
    cols, _ = _model_params(trials)
    if len(trials) < 2 or not cols:
        why = f"{len(trials)} trial(s) with a finite val MSE" if len(trials) < 2 else "no parameter varied"
        return ImportanceInfo(model, {}, "", len(trials), f"{model}: {why}; importances need 2 or more "
                                                           "completed trials with varying parameters.")
    study = _rebuilt_study(exp, model, trials, cols)
    n_asha = int((trials["outcome"] == Outcome.STOPPED_EARLY).sum())
    caveat = (f" {n_asha} of the {len(trials)} trials were stopped early by ASHA and enter with the best value "
              "they reached on their shorter budget." if n_asha else "")
    if len(trials) < _FEW_TRIALS:
        caveat += f" Only {len(trials)} trials: treat these importances as a rough hint."
    errors = []
    # fANOVA needs scikit-learn, an optional dependency: its constructor raises ImportError without it.
    for label, make in (("PED-ANOVA", PedAnovaImportanceEvaluator),
                        ("fANOVA", lambda: FanovaImportanceEvaluator(seed=0))):
        try:
            evaluator = make()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                logging.getLogger("optuna").setLevel(logging.ERROR)
                imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except Exception as exc:  # too few trials for the evaluator, a degenerate split, ...
            errors.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        if imp and all(math.isfinite(v) for v in imp.values()) and sum(imp.values()) > 0:
            imp = dict(sorted(imp.items(), key=lambda kv: -kv[1]))
            return ImportanceInfo(model, imp, label, len(study.trials), caveat.strip() or None)
        errors.append(f"{label}: gave no usable importances")
    return ImportanceInfo(model, {}, "", len(study.trials),
                          f"{model}: importances could not be computed ({'; '.join(errors)}).")


def draw_importance(info: ImportanceInfo) -> go.Figure:
    """Horizontal bars, most important at the top."""
    title = f"{info.model}: hyperparameter importance ({info.evaluator or 'n/a'}, {info.n_trials} trials)"
    if not info.importances:
        return empty_figure(title, info.note or "nothing to draw")
    names = list(info.importances)[::-1]
    fig = go.Figure(go.Bar(x=[info.importances[n] for n in names], y=names, orientation="h",
                           marker_color="#1f77b4", hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=f"importance for best val {MSE_FRAME_LABEL}",
                      height=170 + 36 * len(names), margin=dict(l=160),
                      yaxis=dict(tickmode="array", tickvals=names, ticktext=names))  # every label, always
    return fig
