"""The report's summary: what was searched, how the trials ended, what it cost, on what."""

from __future__ import annotations

import math
import time
from collections import Counter
from datetime import datetime
from typing import Any, NamedTuple

from mmtune._num import as_finite, is_finite
from mmtune.experiment import Outcome
from mmtune.report._load import Experiment, trial_table

_STATUS_NOTES = {
    "running": "The sweep is still running: this report is a snapshot and will change.",
    "interrupted": "The sweep was interrupted before it finished: trials it had not run are missing.",
    "unknown": "There is no sweep.json: whether the sweep finished is unknown.",
}


class SummaryInfo(NamedTuple):
    """The numbers of the summary section."""

    name: str
    status: str  # completed | interrupted | running | unknown
    models: list[str]
    trials_per_model: dict[str, int]
    trials: int
    outcomes: dict[Outcome, int]  # number of trials, every Outcome
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
    started: str | None  # ISO 8601, as sweep.json has it
    ended: str | None
    notes: list[str]
    objective: str = "mse"  # the sweep's --objective
    budget: str | None = None  # --time-budget planned against used, in words (None without one)
    warm_start: str | None = None  # where --warm-start came from and what it queued, in words
    final_phase: str | None = None  # what the final phase trained, how long, on what, in words (None without one)
    training_share: str | None = None  # the share of the machine's time in training steps, in words


def budget_text(budget: dict[str, Any] | None) -> str | None:
    """sweep.json's budget record in words: planned, used by the search, and whether it ended the search."""
    if not budget:
        return None
    from mmtune.search.budget import format_duration

    planned = f"{budget.get('budget') or format_duration(budget['budget_s'])} ({budget['budget_s']:.0f} s) planned"
    if budget.get("used_s") is None:
        return planned + "; not used up yet (the sweep has not ended)"
    search = f" of its {format_duration(budget['search_s'])}" if budget.get("search_s") else ""
    text = (f"{planned} for the whole sweep; the search used {format_duration(budget['used_s'])} "
            f"({budget['used_s']:.0f} s){search}, the whole sweep with its test split "
            f"{format_duration(budget.get('sweep_s') or 0)}")
    if budget.get("ended_by_budget"):
        text += f"; the budget ended the sweep after {budget.get('trials_started')} trials"
        if budget.get("refused"):
            text += f" ({budget['refused']} not started, as they would not have ended in time)"
        if budget.get("cut"):
            text += f"; {budget['cut']} cut at the budget, at their last finished epoch"
    return text


def warm_text(warm: dict[str, Any] | None) -> str | None:
    """sweep.json's warm-start record in words."""
    if not warm:
        return None
    ids = ", ".join(str(e["trial_id"]) for e in warm.get("enqueued", []))
    left = warm.get("incompatible", [])
    return (f"from {warm['source']}: its {warm.get('known', 0)} fitting trials seeded the study, "
            f"{len(warm.get('enqueued', []))} ran first ({ids})"
            + (f"; {len(left)} did not fit the space and were left out" if left else ""))


def final_text(final: dict[str, Any] | None) -> str | None:
    """sweep.json's final-phase record in words: what it trained, for how long, on how many threads."""
    if not final:
        return None
    start = final.get("start") or "?"
    if not final.get("ran"):
        return f"not run ({start}): too little of the budget was left"
    text = f"{start}, for {_seconds(final.get('seconds'))} on {final.get('threads', '?')} thread(s)"
    if final.get("train_samples"):
        text += f": {final['train_samples']} clips"
    if is_finite(final.get("best_val_mse")):
        text += f", best val mse_frame {as_finite(final['best_val_mse']):.2f}"
    if as_finite(final.get("share")) > 0 and not final.get("no_search"):
        text += f" ({as_finite(final['share']):.0%} of the time budget)"
    return text


def share_text(share: float | None, final: dict[str, Any] | None) -> str | None:
    """sweep.json's training_share in words, naming what it was measured over."""
    if not is_finite(share):
        return None
    ran = bool(final and final.get("ran"))
    who = ("the final phase" if ran and final and final.get("no_search")
           else "the trials and the final phase" if ran else "the trials")
    return f"{who} spent {as_finite(share) * 100:.0f} % of the machine's time in training steps"


def _seconds(s: Any) -> str:
    return f"{as_finite(s):.0f} s" if is_finite(s) else "an unknown time"


def _timestamp(iso: str) -> float:
    """Seconds since the epoch of sweep.json's times (NaN if unreadable)."""
    try:
        return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return math.nan


def get_summary_info(exp: Experiment) -> SummaryInfo:
    """Count trials by outcome and add up their cost."""
    trials = trial_table(exp.results)
    meta = exp.sweep
    status = meta.status if meta else "unknown"
    notes = [_STATUS_NOTES[status]] if status in _STATUS_NOTES else []
    counts = Counter(trials["outcome"])
    resources = {"cpu": float(meta.effective.cpus_per_trial), "gpu": float(meta.effective.gpus_per_trial)} if meta else {}
    trial_hours = float(trials["hours"].sum(skipna=True)) if trials["hours"].notna().any() else math.nan
    if not resources:
        notes.append("Without sweep.json the resources per trial are unknown: CPU/GPU-hours too (trial-hours shown).")
    wall = math.nan
    if meta is not None and is_finite(meta.wall_seconds):
        wall = float(meta.wall_seconds)  # type: ignore[arg-type]
    elif meta is not None:
        wall = time.time() - _timestamp(meta.started)
        if status == "running":
            notes.append("Wall time is counted up to when this report was built.")
    with_result = set(trials.loc[trials["best_val_mse"].notna(), "model"])
    models = exp.models
    without = [m for m in models if m not in with_result and m not in exp.best_configs]
    for m in without:
        n = int((trials["model"] == m).sum())
        notes.append(f"{m}: no completed trial ({n} trial{'s' * (n != 1)} ran, none produced a finite val MSE).")
    hardware = dict(meta.hardware) if meta else {}
    versions = dict(hardware.pop("versions", None) or {})
    return SummaryInfo(
        name=exp.name,
        status=status,
        models=models,
        trials_per_model={m: int((trials["model"] == m).sum()) for m in models},
        trials=len(trials),
        outcomes={o: counts[o] for o in Outcome},
        trial_hours=trial_hours,
        cpu_hours=trial_hours * resources["cpu"] if resources else math.nan,
        gpu_hours=trial_hours * resources["gpu"] if resources else math.nan,
        resources_per_trial=resources,
        wall_seconds=wall,
        num_trials_planned=meta.effective.samples if meta else None,
        hardware=hardware,
        versions=versions,
        hosts=sorted({str(h) for h in trials.get("hostname", []) if isinstance(h, str) and h}),
        models_without_result=without,
        started=meta.started if meta else None,
        ended=meta.ended if meta else None,
        notes=notes,
        objective=meta.objective if meta else "mse",
        budget=budget_text(meta.budget) if meta else None,
        warm_start=warm_text(meta.warm_start) if meta else None,
        final_phase=final_text(meta.final) if meta else None,
        training_share=share_text(meta.training_share, meta.final) if meta else None,
    )
