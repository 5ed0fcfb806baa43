"""Experiment trackers beside TensorBoard: MLflow and Weights & Biases (`--tracker`).

The driver writes the tracker runs after a sweep (or `mmtune train`) from the files mmtune has
already written (results.parquet, sweep.json, best_configs.json, test_metrics.json, baselines.json,
report.html; a train run's test_metrics.json and history.json), with the tracker's own SDK. No Ray
callback is involved, so the trials of every node are logged alike, from the shared results, and
only the driver needs to reach the tracker. On an MLflow store that every node can write (a tracking
server; `mmtune.search.tracking`), each trial has logged its own run live, from its node: the driver
then logs the parent run and completes those runs (outcome, status, parent), adding only what they lack.

Logging a folder again (`mmtune report EXP --tracker ...`, a resumed sweep) updates its runs rather
than doubling them: an MLflow run is found again by its `mmtune.source` tag and its key (the trial id,
or the kind of run), and gets only the steps, params and metrics it lacks; a W&B run has an id made
from the experiment, the trial and the folder (`wandb_run_id`), resumed rather than created again,
and its earlier offline copy is replaced.

- A sweep is one MLflow experiment (or one W&B group) named after it. Each trial is a run: its
  sampled parameters, every epoch's metrics (the names of results.parquet: `val_mse` per frame,
  `val_mse_pixel255`, the speeds ...) and the tags `model`, `outcome` (`Outcome`'s value) and `node`.
  A parent run holds the sweep's arguments, each family's test metrics and the baselines as
  metrics, and the sweep's files as artifacts.
- `mmtune train` is one run (experiment `TRAIN_EXPERIMENT`): its config, its epochs, its test metrics.

Reading the files into tracker-neutral records (`sweep_log`, `train_log`) is apart from writing
them (`log_to`), so what a tracker receives is decided in one place.

Example:
    >>> trackers = parse_trackers(["mlflow"])  # doctest: +SKIP
    >>> log_to(trackers, sweep_log("experiments/sweep-20260101-120000-ab12"))  # doctest: +SKIP
    ["mlflow: 8 trial runs and the sweep's run in experiment 'sweep-20260101-120000-ab12' ..."]
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import re
import shutil
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmtune._num import as_finite
from mmtune.errors import MMTuneError
from mmtune.experiment import (
    BASELINES_FILE,
    BEST_CONFIGS_FILE,
    HISTORY_FILE,
    RESULTS_FILE,
    SPACE_FILE,
    STRIP_FILE,
    SWEEP_FILE,
    TEST_METRICS_FILE,
    TRAIN_FILE,
    ExperimentFileError,
    Outcome,
    read_baselines,
    read_results,
    read_sweep,
    read_test_metrics,
    read_train_record,
    trial_outcomes,
)
from mmtune.search.tracking import (  # what the trials' live runs and the driver's runs share
    EPOCH_METRICS,
    KIND_TAG,
    LIVE_TAG,
    SOURCE_TAG,
    experiment_id,
    find_runs,
    flat,
    logged_steps,
    mlflow_client,
    mlflow_uri,
)
from mmtune.search.tracking import finite as _finite

# Tracker name -> (the module it needs, what the value after `=` is).
TRACKERS = {"mlflow": ("mlflow", "URI"), "wandb": ("wandb", "PROJECT")}
WANDB_PROJECT = "mmtune"
TRAIN_EXPERIMENT = "mmtune-train"  # the MLflow experiment (W&B group) of `mmtune train` runs
# A train run's history.json `val` keys -> the names the sweep's rows give them (trial_log.TrialLog.row).
VAL_NAMES = {"mse_frame": "val_mse", "mse_pixel255": "val_mse_pixel255", "mae_frame": "val_mae",
             "ssim": "val_ssim", "psnr": "val_psnr"}
# Artifacts of a sweep's parent run (report.html is added when it was built).
SWEEP_FILES = (SWEEP_FILE, BEST_CONFIGS_FILE, TEST_METRICS_FILE, BASELINES_FILE, SPACE_FILE, RESULTS_FILE)
TRAIN_FILES = (TRAIN_FILE, TEST_METRICS_FILE, BASELINES_FILE, HISTORY_FILE, STRIP_FILE)
_FAILED = {Outcome.FAILED.value, Outcome.DIVERGED.value}
_UNFINISHED = {Outcome.RUNNING.value, Outcome.PENDING.value}


@dataclass(frozen=True)
class Tracker:
    """One `--tracker NAME[=VALUE]`: mlflow's tracking URI, or wandb's project (None: the default)."""

    name: str
    value: str | None = None


def parse_trackers(values: Iterable[str] | None) -> list[Tracker]:
    """The `--tracker` flags, each checked and its package imported, before anything is trained.

    Raises:
        MMTuneError: an unknown tracker, an empty value, one given twice, or its package is not installed
            (the line names the extra to install).
    """
    out: list[Tracker] = []
    for text in values or []:
        name, eq, value = text.partition("=")
        name = name.strip().lower()
        if name not in TRACKERS:
            raise MMTuneError(f"--tracker {text}: unknown tracker {name!r}; expected "
                              + " or ".join(f"{k}[={v}]" for k, (_, v) in TRACKERS.items()))
        if eq and not value.strip():
            raise MMTuneError(f"--tracker {text}: the {TRACKERS[name][1]} after '=' is empty; give one, "
                              f"or --tracker {name} for the default")
        if any(t.name == name for t in out):
            raise MMTuneError(f"--tracker {name} is given twice; give it once")
        _require(name)
        out.append(Tracker(name, value.strip() if eq else None))
    return out


def _require(name: str) -> None:
    """Import the tracker's package now, so that a missing extra is one line before any training."""
    module = TRACKERS[name][0]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MMTuneError(f"--tracker {name} needs the {name} extra, which is not installed ({exc}): "
                          f"pip install 'mmtune[{name}]'") from None


# -- what a tracker receives ---------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One epoch of a run: its metrics (finite values only) and when it was reported (s, or None)."""

    step: int
    metrics: dict[str, float]
    timestamp: float | None = None


@dataclass(frozen=True)
class RunLog:
    """One tracker run: a trial (or a train run), or a sweep's parent run."""

    name: str
    params: dict[str, Any]
    tags: dict[str, str]
    outcome: str  # an `Outcome` value (a train run's status: completed | diverged)
    steps: list[Step] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)  # run-level metrics (test metrics, baselines)
    files: list[Path] = field(default_factory=list)  # artifacts
    started: float | None = None  # s since the epoch
    ended: float | None = None


@dataclass(frozen=True)
class ExperimentLog:
    """What one logging writes: one experiment (W&B group), an optional parent run and its runs."""

    name: str  # the MLflow experiment, the W&B group
    kind: str  # sweep | train
    source: Path  # the folder read: a default store goes inside it, and it identifies earlier runs
    runs: list[RunLog]
    parent: RunLog | None = None


def sweep_log(exp_dir: str | Path) -> ExperimentLog:
    """A sweep's experiment directory as a parent run (the sweep) and one run per trial.

    Raises:
        MMTuneError: the directory is not a readable sweep (sweep.json, results.parquet).
    """
    exp = Path(exp_dir).resolve()
    meta = read_sweep(exp)
    df = read_results(exp)
    outcomes = trial_outcomes(df)
    config_cols = [c for c in df.columns if c.startswith("config/")]
    runs = []
    for trial_id, g in df.groupby("trial_id", sort=False):
        tid = str(trial_id)
        params = {c.removeprefix("config/"): _first(g[c]) for c in config_cols}
        first = g.iloc[0]
        tags = _trial_tags(g, tid, outcomes[tid].value)
        steps = [Step(int(r["epoch"]), _finite({k: r[k] for k in EPOCH_METRICS if k in r}),
                      _timestamp(r.get("timestamp")))
                 for _, r in g.iterrows() if as_finite(r["epoch"]) > 0]
        stamps = [s.timestamp for s in steps if s.timestamp is not None]
        t_first = as_finite(first.get("time_total_s"))
        started = stamps[0] - (t_first if not math.isnan(t_first) else 0.0) if stamps else None
        runs.append(RunLog(f"trial_{tid}", {k: v for k, v in params.items() if v is not None}, tags,
                           outcomes[tid].value, steps, started=started, ended=stamps[-1] if stamps else None))
    summary: dict[str, float] = {}
    best = {}
    try:
        for model, t in read_test_metrics(exp).items():
            summary.update({f"{model}/test_{k}": v for k, v in _finite(t.test or {}).items()})
            best[f"best/{model}"] = t.trial_id
    except ExperimentFileError:
        pass  # an interrupted sweep may have tested nothing: its trials are logged all the same
    try:
        for split, b in read_baselines(exp).splits.items():
            for base, metrics in b.metrics.items():
                summary.update({f"baseline/{split}/{base}/{k}": v for k, v in _finite(metrics).items()})
    except ExperimentFileError:
        pass
    from mmtune.report.build import default_out

    files = [exp / f for f in SWEEP_FILES if (exp / f).is_file()]
    if default_out(exp).is_file():
        files.append(default_out(exp))
    parent_tags = {"kind": "sweep", "status": meta.status, "outcome": meta.status,
                   "node": socket.gethostname(),  # the driver's: it tested the families and wrote the files
                   "num_trials": str(meta.num_trials), **best}
    params = {k: v for k, v in flat(meta.args, ".").items() if v is not None}
    parent = RunLog(meta.name, params, parent_tags, meta.status, summary=summary, files=files,
                    started=min((r.started for r in runs if r.started is not None), default=None),
                    ended=max((r.ended for r in runs if r.ended is not None), default=None))
    return ExperimentLog(meta.name, "sweep", exp, runs, parent)


def _trial_tags(g: Any, trial_id: str, outcome: str) -> dict[str, str]:
    """A trial's tags from its rows of results.parquet: model, outcome, where it ran, Ray's status."""
    first = g.iloc[0]
    tags = {"model": str(first["model"]), "outcome": outcome,
            "node": str(_first(g["hostname"]) or _first(g["node_ip"]) or "unknown"),
            "node_ip": str(_first(g["node_ip"]) or ""), "trial_id": trial_id,
            "node_id": str(_first(g["node_id"]) or "") if "node_id" in g else "",
            "phase": str(first.get("phase", "search")), "ray_status": str(g["status"].iloc[-1])}
    if _first(g["optuna_trial"]) is not None:
        tags["optuna_trial"] = str(int(_first(g["optuna_trial"])))
    if _first(g["error"]) is not None:
        tags["error"] = str(_first(g["error"]))[:5000]
    return tags


def train_log(out_dir: str | Path) -> ExperimentLog:
    """A `mmtune train` folder (train.json, test_metrics.json, baselines.json, history.json) as one run.

    Raises:
        MMTuneError: the folder lacks them, or they cannot be read.
    """
    out = Path(out_dir).resolve()
    try:
        record, tests, baselines = read_train_record(out), read_test_metrics(out), read_baselines(out)
    except ExperimentFileError as exc:
        raise MMTuneError(f"{out}: {exc}; it is not a finished mmtune train folder") from None
    history = _read_json(out / HISTORY_FILE)
    train_size = (record.config.get("data") or {}).get("train_size")
    steps = []
    for h in history:
        metrics = {VAL_NAMES[k]: v for k, v in (h.get("val") or {}).items() if k in VAL_NAMES}
        metrics.update(train_loss=h.get("train_loss"), epoch_seconds=h.get("seconds"),
                       train_seconds=h.get("train_seconds"), train_samples=h.get("train_samples"))
        seconds, samples = as_finite(h.get("train_seconds")), as_finite(h.get("train_samples") or train_size)
        if seconds > 0 and h.get("status") != "diverged":
            metrics["train_samples_per_s"] = samples / seconds
        steps.append(Step(int(h["epoch"]), _finite(metrics)))
    tested = tests.get(record.model)
    summary = {f"test_{k}": v for k, v in _finite((tested.test if tested else None) or {}).items()}
    for split, b in baselines.splits.items():
        for base, metrics in b.metrics.items():
            summary.update({f"baseline/{split}/{base}/{k}": v for k, v in _finite(metrics).items()})
    tags = {"kind": "train", "model": record.model, "outcome": record.status,
            "node": socket.gethostname(), "device": record.device}
    if record.message:
        tags["message"] = str(record.message)[:5000]
    wall = as_finite(record.wall_seconds)
    ended = (out / TRAIN_FILE).stat().st_mtime
    run = RunLog(out.name, flat(record.config, "."), tags, record.status, steps, summary,
                 [out / f for f in TRAIN_FILES if (out / f).is_file()],
                 started=ended - wall if not math.isnan(wall) else None, ended=ended)
    return ExperimentLog(TRAIN_EXPERIMENT, "train", out, [run])


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MMTuneError(f"{path}: could not be read for the tracker ({type(exc).__name__}: {exc})") from None


def _first(col: Any) -> Any:
    """The first value of a column that is not null (None when all are)."""
    values = col.dropna()
    if values.empty:
        return None
    v = values.iloc[0]
    return v.item() if hasattr(v, "item") else v  # numpy scalars as Python numbers


def _timestamp(x: Any) -> float | None:
    t = as_finite(x)
    return None if math.isnan(t) else t


# -- writing it ----------------------------------------------------------------------------------


def log_to(trackers: list[Tracker], log: ExperimentLog) -> list[str]:
    """Write `log` to each tracker; one line per tracker says where it went and how to open it.

    Raises:
        MMTuneError: a tracker refused it (e.g. its server cannot be reached); the line says how to log
            the folder again.
    """
    writers = {"mlflow": _log_mlflow, "wandb": _log_wandb}
    lines = []
    for t in trackers:
        try:
            lines.append(writers[t.name](t, log))
        except MMTuneError:
            raise
        except Exception as exc:  # the results are on disk: say so, and how to log them again
            flag = f"--tracker {t.name}" + (f"={t.value}" if t.value else "")
            again = (f"; log them again with: mmtune report {log.source} {flag}" if log.kind == "sweep" else "")
            raise MMTuneError(f"{flag}: logging {log.source} failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); its files are written{again}") from None
    return lines


def _key(tags: dict[str, str]) -> str:
    """What a run is within its folder: a trial's id, else the kind (the sweep's parent run, a train run)."""
    return tags.get("trial_id") or tags.get("kind") or ""


def _log_mlflow(tracker: Tracker, log: ExperimentLog) -> str:
    from mlflow.entities import Metric, Param, RunTag

    uri = mlflow_uri(tracker.value, log.source)
    client = mlflow_client(uri)
    exp_id = experiment_id(client, uri, log.name)
    source = str(log.source)
    earlier: dict[str, Any] = {}
    for r in find_runs(client, exp_id, source):
        if _key(r.data.tags) in earlier:  # two runs of one trial (two loggings of the folder at once): keep the oldest
            client.delete_run(r.info.run_id)
        else:
            earlier[_key(r.data.tags)] = r
    found = {"updated": 0, "live": 0}

    def write(run: RunLog, parent_id: str | None) -> str:
        """Create the run, or update the one logged before (or live, by its trial): only what it lacks."""
        tags = {**run.tags, SOURCE_TAG: source, KIND_TAG: log.kind,
                **({"mlflow.parentRunId": parent_id} if parent_id else {})}
        old = earlier.get(_key(run.tags))
        if old is None:
            run_id = client.create_run(exp_id, start_time=_ms(run.started), tags=tags, run_name=run.name).info.run_id
            have_params: set[str] = set()
            have_steps: set[int] = set()
            have_metrics: dict[str, float] = {}
        else:
            run_id, have_params, have_metrics = old.info.run_id, set(old.data.params), dict(old.data.metrics)
            have_steps = logged_steps(client, run_id)
            found["updated"] += 1
            found["live"] += old.data.tags.get(LIVE_TAG) == "1"
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, _ms(s.timestamp) or now, s.step)
                   for s in run.steps if s.step not in have_steps for k, v in s.metrics.items()]
        metrics += [Metric(k, v, now, 0) for k, v in run.summary.items() if have_metrics.get(k) != v]
        # A param once logged cannot change in MLflow (a resumed sweep's `resume`): the first value stays.
        params = [Param(k, str(v)[:500]) for k, v in run.params.items() if k not in have_params]
        run_tags = [RunTag(k, v) for k, v in tags.items()] if old is not None else []
        for i in range(0, max(len(metrics), len(params), len(run_tags), 1), 100):  # MLflow takes 100 a batch
            client.log_batch(run_id, metrics=metrics[i:i + 100], params=params[i:i + 100], tags=run_tags[i:i + 100])
        for path in run.files:  # the same path again replaces the artifact
            client.log_artifact(run_id, str(path))
        status = "FAILED" if run.outcome in _FAILED else "KILLED" if run.outcome in _UNFINISHED else "FINISHED"
        client.set_terminated(run_id, status, end_time=_ms(run.ended))
        return run_id

    parent_id = write(log.parent, None) if log.parent else None
    for run in log.runs:
        write(run, parent_id)
    again = (f", updating {found['updated']} run(s) logged before" if found["updated"] else "")
    again += (f" ({found['live']} trial run(s) logged live by their nodes)" if found["live"] else "")
    what = (f"{len(log.runs)} trial run(s) and the sweep's run" if log.parent else f"{len(log.runs)} run(s)")
    how = (f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite:") else uri)
    return f"mlflow: {what} in experiment {log.name!r} at {uri}{again} (open it: {how})"


def _ms(t: float | None) -> int | None:
    return None if t is None else int(t * 1000)


def _log_wandb(tracker: Tracker, log: ExperimentLog) -> str:
    """Offline W&B runs (WANDB_MODE, when set, wins) under `source`/wandb; `wandb sync` uploads them."""
    import wandb

    mode: Any = os.environ.get("WANDB_MODE") or "offline"  # W&B checks the value
    project = tracker.value or os.environ.get("WANDB_PROJECT") or WANDB_PROJECT
    # No system-metrics sampling, console capture, code, git or pip-freeze: the runs hold what mmtune measured.
    settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False,
                              disable_git=True, x_save_requirements=False)
    runs = ([log.parent] if log.parent else []) + log.runs
    for run in runs:
        job = "sweep" if run is log.parent else ("trial" if log.kind == "sweep" else "train")
        config = {**run.params, "mmtune": {**run.tags, "source": str(log.source)}}
        run_id = wandb_run_id(log, run)
        if mode == "offline":  # logged again: this copy replaces the earlier one, which `wandb sync` would send too
            for old in (log.source / "wandb").glob(f"offline-run-*-{run_id}"):
                if re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{re.escape(run_id)}", old.name):
                    shutil.rmtree(old, ignore_errors=True)
        # resume="allow": a run already uploaded (`wandb sync`, online) is continued, not created twice;
        # W&B drops the steps it already holds.
        w = wandb.init(project=project, group=log.name, job_type=job, name=run.name, config=config, id=run_id,
                       resume="allow",
                       tags=[f"{k}:{run.tags[k]}"[:64] for k in ("model", "outcome", "node") if k in run.tags],
                       dir=str(log.source), mode=mode, settings=settings)
        try:
            for s in run.steps:
                w.log({**s.metrics, "epoch": s.step}, step=s.step)
            w.summary.update(run.summary)
            for path in run.files:  # copied into the run, so the offline run holds everything `wandb sync` sends
                shutil.copy2(path, Path(w.dir) / path.name)
                w.save(str(Path(w.dir) / path.name), base_path=w.dir, policy="now")
        finally:
            w.finish(exit_code=1 if run.outcome in _FAILED else 0)
    # finish() returns before W&B's service process has closed the run's .wandb file (it only informs
    # the service); its teardown waits for that, so the runs are whole on disk (or uploaded) when we say so.
    wandb.teardown()
    where = log.source / "wandb"
    what = f"{len(log.runs)} trial run(s) and the sweep's run" if log.parent else f"{len(log.runs)} run(s)"
    how = (f"wandb sync {where}/offline-run-*" if mode == "offline" else f"project {project}")
    return f"wandb: {what} ({mode}) in group {log.name!r} of project {project!r} under {where} (upload: {how})"


def wandb_run_id(log: ExperimentLog, run: RunLog) -> str:
    """A run's W&B id, the same each time its folder is logged: the experiment, the trial (or the train
    run's folder), and a hash of the folder's path (two folders of one sweep name are two runs); W&B
    takes letters, digits, `-` and `_`, at most 64."""
    what = log.name if run is log.parent else f"{log.name}-{run.tags.get('trial_id') or run.name}"
    digest = hashlib.sha1(str(log.source).encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_-]+', '-', what)[:55]}-{digest}"
