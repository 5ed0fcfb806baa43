"""The report's summary: what was searched, how the trials ended, what it cost, on what."""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any, NamedTuple

from mmtune.report._load import OUTCOMES, Experiment, as_dict, finite, trial_table


class SummaryInfo(NamedTuple):
    """The numbers of the summary section."""

    name: str
    status: str  # completed | interrupted | running | unknown
    models: list[str]
    trials_per_model: dict[str, int]
    trials: int
    outcomes: dict[str, int]  # outcome label -> number of trials, every label in OUTCOMES
    trial_hours: float  # sum over trials of their wall time (NaN if no timing was recorded)
    cpu_hours: float  # trial_hours x CPUs per trial (NaN if unknown)
    gpu_hours: float  # trial_hours x GPUs per trial (NaN if unknown)
    resources_per_trial: dict[str, float]
    wall_seconds: float
    num_trials_planned: int | None
    hardware: dict[str, Any]
    versions: dict[str, Any]
    hosts: list[str]
    models_without_result: list[str]  # families with no trial that produced a finite val MSE
    notes: list[str]


def _timestamp(x: Any) -> float | None:
    """Seconds since the epoch from a float or an ISO-8601 string (None if neither)."""
    if finite(x):
        return float(x)
    if isinstance(x, str):
        try:
            return datetime.fromisoformat(x).timestamp()
        except ValueError:
            return None
    return None


def sweep_time(sweep: dict[str, Any], which: str) -> Any:
    """sweep.json's start or end time, under any of the names it has used (None if absent)."""
    names = ("start", "started", "start_time") if which == "start" else ("end", "ended", "end_time", "finished")
    for n in names:
        if sweep.get(n):
            return sweep[n]
    runs = sweep.get("runs")
    if isinstance(runs, list) and runs and isinstance(runs[0 if which == "start" else -1], dict):
        run = runs[0 if which == "start" else -1]
        return next((run[n] for n in names if run.get(n)), None)
    return None


def get_summary_info(exp: Experiment) -> SummaryInfo:
    """Count trials by outcome and add up their cost."""
    trials = trial_table(exp.results)
    sweep = exp.sweep
    notes: list[str] = []
    status = str(sweep.get("status") or "unknown")
    if status == "running":
        notes.append("The sweep is still running: this report is a snapshot and will change.")
    elif status == "interrupted":
        notes.append("The sweep was interrupted before it finished: trials it had not run are missing.")
    elif status == "unknown":
        notes.append("sweep.json gives no status: whether the sweep finished is unknown.")

    outcomes = {o: 0 for o in OUTCOMES}
    for o in trials["outcome"]:
        outcomes[o] += 1
    res = as_dict(sweep.get("resources_per_trial"))
    args = as_dict(sweep.get("args"))
    if not res:  # older sweep.json: the --cpus/--gpus-per-trial arguments
        res = {k: args.get(f"{k}s_per_trial") for k in ("cpu", "gpu") if f"{k}s_per_trial" in args}
    resources = {k: float(v) for k, v in res.items() if finite(v)}
    trial_hours = float(trials["hours"].sum(skipna=True)) if trials["hours"].notna().any() else math.nan
    cpu_hours = trial_hours * resources["cpu"] if "cpu" in resources else math.nan
    gpu_hours = trial_hours * resources["gpu"] if "gpu" in resources else math.nan
    if not resources:
        notes.append("sweep.json gives no resources_per_trial: CPU/GPU-hours are unknown (trial-hours shown).")

    wall = float(sweep["wall_seconds"]) if finite(sweep.get("wall_seconds")) else math.nan
    start = _timestamp(sweep_time(sweep, "start"))
    if not finite(wall) and start is not None:
        end = _timestamp(sweep_time(sweep, "end")) or time.time()
        wall = end - start
        if status == "running":
            notes.append("Wall time is counted up to when this report was built.")

    with_result = set(trials.loc[trials["best_val_mse"].notna(), "model"])
    models = exp.models
    without = [m for m in models if m not in with_result and m not in exp.best_configs]
    for m in without:
        n = int((trials["model"] == m).sum())
        notes.append(f"{m}: no completed trial ({n} trial{'s' * (n != 1)} ran, none produced a finite val MSE).")
    hosts = sorted({str(h) for h in trials.get("hostname", []) if isinstance(h, str) and h})
    effective = as_dict(sweep.get("effective"))
    planned = sweep.get("num_trials", effective.get("samples"))
    hardware = dict(sweep.get("hardware") or {})
    versions = dict(sweep.get("versions") or hardware.pop("versions", None) or {})
    hardware.pop("versions", None)
    return SummaryInfo(
        name=exp.name,
        status=status,
        models=models,
        trials_per_model={m: int((trials["model"] == m).sum()) for m in models},
        trials=len(trials),
        outcomes=outcomes,
        trial_hours=trial_hours,
        cpu_hours=cpu_hours,
        gpu_hours=gpu_hours,
        resources_per_trial=resources,
        wall_seconds=wall,
        num_trials_planned=int(planned) if planned is not None and finite(planned) else None,
        hardware=hardware,
        versions=versions,
        hosts=hosts,
        models_without_result=without,
        notes=notes,
    )
