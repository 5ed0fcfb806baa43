"""The files a sweep or a run leaves: their names, the typed record of each file, and their readers and writers.

`sweep.py` writes an experiment through this module and `mmtune.report` reads it back through it,
so the two cannot drift apart. ``--storage/NAME`` holds, besides Ray's own files:

- ``sweep.json`` (`SweepMeta`): the arguments, the settings in effect, timings, status, hardware;
  ``"schema"`` is `SCHEMA`, and a directory of another schema is refused in one line (`SchemaError`)
- ``results.parquet`` (`ROW_COLUMNS`, then ``config/<param>``): every trial x epoch
- ``best_configs.json`` (`BestConfig` per model): the best trial (best val MSE over all epochs)
- ``test_metrics.json`` (`TestResult` per model): that trial's best checkpoint on the test split
- ``baselines.json`` (`Baselines`): the trivial baselines of the val and test splits
- ``predictions/<model>.npz`` (`Prediction`): inputs, truth and prediction of a few test clips
- ``study.db``: the Optuna study; ``space.yaml``: a copy of the search space

How a trial ended is one `Outcome`, decided in one place (`classify`). This module does not import Ray.

Example:
    >>> meta = read_sweep("experiments/sweep-20260101-120000-ab12")  # doctest: +SKIP
    >>> meta.status, meta.effective.samples  # doctest: +SKIP
    ('completed', 8)
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import statistics
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from mmtune._io import atomic_write_bytes, write_json
from mmtune._num import as_finite
from mmtune.errors import MMTuneError

MODEL_KEY = "model"  # the Optuna name (and config key) of the sampled model; spaces.py samples it
SCHEMA = 1  # of sweep.json, and so of the directory; raise it when a file's layout changes

SWEEP_FILE = "sweep.json"
RESULTS_FILE = "results.parquet"
BEST_CONFIGS_FILE = "best_configs.json"
TEST_METRICS_FILE = "test_metrics.json"
BASELINES_FILE = "baselines.json"
PREDICTIONS_DIR = "predictions"
STUDY_FILE = "study.db"
SPACE_FILE = "space.yaml"
REPORT_FILE = "report.html"  # mmtune report's default output
STATE_FILE = "state.pt"  # a trial's checkpoint, inside each Ray checkpoint folder (sha256 beside it)
# What `mmtune train` writes into its folder: test_metrics.json and baselines.json as a sweep does
# (one family), the run's own record, each epoch's record, the last and the best checkpoint (each
# with its sha256 sidecar) and a strip of test frames.
TRAIN_FILE = "train.json"
HISTORY_FILE = "history.json"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
STRIP_FILE = "strip.png"
RUN_FILES = (TEST_METRICS_FILE, BASELINES_FILE, TRAIN_FILE, HISTORY_FILE, LAST_CHECKPOINT, f"{LAST_CHECKPOINT}.sha256", BEST_CHECKPOINT,
             f"{BEST_CHECKPOINT}.sha256", STRIP_FILE)
# What a sweep writes; any of them may be absent while it runs or after it was interrupted.
FILES = (RESULTS_FILE, BEST_CONFIGS_FILE, TEST_METRICS_FILE, BASELINES_FILE, SWEEP_FILE, STUDY_FILE,
         PREDICTIONS_DIR)


class ExperimentFileError(MMTuneError):
    """A file of the experiment cannot be read, or does not hold its record (the report notes it)."""


class SchemaError(MMTuneError):
    """The directory was written in another format than `SCHEMA` (the report stops with this line)."""


def is_uri(storage: str) -> bool:
    """True for storage like s3://bucket/x or gs://..., False for a local path."""
    return "://" in storage and not storage.startswith("file://")


# -- how a trial ended -------------------------------------------------------------------------


# True on the rows of a trial that --time-budget's hard limit ended (results.parquet's column, and the
# key the budget limiter adds to such a trial's last result); absent from an earlier sweep's results.
CUT_KEY = "cut_by_budget"
INFEASIBLE_KEY = "infeasible"  # a trial refused before it started: its config cannot fit in memory


class Outcome(Enum):
    """How a trial ended, or where it stands; `label` is what the report and console show."""

    COMPLETED = "completed"
    STOPPED_EARLY = "stopped_early"
    CUT_AT_BUDGET = "cut_by_budget"
    DIVERGED = "diverged"
    INFEASIBLE = "infeasible"
    FAILED = "failed"
    RUNNING = "running"
    PENDING = "pending"

    @property
    def label(self) -> str:
        """The display label, e.g. "stopped early (ASHA)"."""
        return _LABELS[self]


_LABELS = {Outcome.COMPLETED: "completed", Outcome.STOPPED_EARLY: "stopped early (ASHA)",
           Outcome.CUT_AT_BUDGET: "cut at the time budget",
           Outcome.DIVERGED: "diverged (NaN)", Outcome.INFEASIBLE: "infeasible (does not fit in memory)",
           Outcome.FAILED: "failed (error)", Outcome.RUNNING: "running",
           Outcome.PENDING: "pending"}


def classify(status: str, diverged: bool, last_epoch: int, planned: int, cut: bool = False,
             infeasible: bool = False) -> Outcome:
    """The one rule for how a trial ended.

    Args:
        status: Ray's trial status (TERMINATED, ERROR, RUNNING, PENDING, PAUSED).
        diverged: whether any of its epochs went NaN.
        last_epoch: the last epoch it reported (0: none).
        planned: the epochs it was given; a finished trial that stopped short was stopped by ASHA,
            or, when `cut`, by --time-budget's hard limit.
        cut: it ended once the time budget was spent.
        infeasible: it was refused before it started (its config cannot fit in memory).
    """
    status = status.upper()
    if status == "ERROR":
        return Outcome.FAILED
    if infeasible:
        return Outcome.INFEASIBLE
    if diverged:
        return Outcome.DIVERGED
    if status == "RUNNING":
        return Outcome.RUNNING
    if status != "TERMINATED":
        return Outcome.PENDING
    if cut and (last_epoch < planned or last_epoch == 0):  # ended short, or before its first epoch
        return Outcome.CUT_AT_BUDGET
    if 0 < last_epoch < planned:
        return Outcome.STOPPED_EARLY
    return Outcome.COMPLETED


def best_row(rows: Any) -> Any | None:
    """A trial's row (results.parquet's layout) of its lowest finite val_mse; None when it has none.

    The best-epoch rule, in one place: the report's tables, its Pareto panel and --warm-start read a
    trial's best epoch through it.
    """
    import numpy as np
    import pandas as pd

    vals = pd.to_numeric(rows["val_mse"], errors="coerce").to_numpy(dtype=float)
    finite = np.isfinite(vals)
    if not finite.any():
        return None
    return rows.iloc[int(np.argmin(np.where(finite, vals, np.inf)))]


def trial_outcomes(results: Any) -> dict[str, Outcome]:
    """Trial id -> `Outcome` of a results frame (results.parquet's layout)."""
    import pandas as pd

    out: dict[str, Outcome] = {}
    if results.empty:
        return out
    for tid, g in results.groupby("trial_id", sort=False):
        last, planned = (as_finite(pd.to_numeric(g[c], errors="coerce").max()) for c in ("epoch", "epochs_planned"))
        diverged = bool(g["diverged"].fillna(False).astype(bool).any())
        cut, infeasible = (bool(g[k].fillna(False).astype(bool).any()) for k in (CUT_KEY, INFEASIBLE_KEY))
        out[str(tid)] = classify(str(g["status"].iloc[-1]), diverged, 0 if math.isnan(last) else int(last),
                                 0 if math.isnan(planned) else int(planned), cut, infeasible)
    return out


def trial_counts(results: Any) -> dict[str, Any]:
    """sweep.json's trial counts and timings (`SweepMeta.num_trials` ...) of a results frame."""
    if results.empty:
        return {"num_trials": 0, "stopped_early": 0, "cut_by_budget": 0, "errored": 0, "diverged": 0,
                "infeasible": 0, "trial_epochs": 0}
    n = Counter(trial_outcomes(results).values())
    per_trial = results.groupby("trial_id").agg(total=("time_total_s", "max"), train=("train_seconds_total", "max"))
    overheads = [float(r.total) - float(r.train) for r in per_trial.itertuples()
                 if not math.isnan(as_finite(r.total)) and not math.isnan(as_finite(r.train))]
    return {
        "num_trials": int(len(per_trial)),
        "stopped_early": n[Outcome.STOPPED_EARLY],
        "cut_by_budget": n[Outcome.CUT_AT_BUDGET],
        "errored": n[Outcome.FAILED],
        "diverged": n[Outcome.DIVERGED],
        "infeasible": n[Outcome.INFEASIBLE],
        "trial_epochs": int(results[results["epoch"] > 0].shape[0]),
        "median_trial_overhead_s": statistics.median(overheads) if overheads else None,
        "median_trial_seconds": float(per_trial["total"].median()) if per_trial["total"].notna().any() else None,
    }


# -- what Ray reports, and results.parquet -------------------------------------------------------


@dataclass(frozen=True)
class CheckpointRef:
    """A kept checkpoint: where it is, the metrics it was reported with, and Ray's handle to fetch it."""

    path: str
    metrics: dict[str, Any]
    handle: Any = None


@dataclass
class TrialRecord:
    """One Ray trial as read back from the experiment: every reported row, its status and checkpoints."""

    trial_id: str
    status: str  # Ray's: TERMINATED | ERROR | RUNNING | PENDING | PAUSED
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    error: str | None
    path: str
    checkpoints: list[CheckpointRef] = field(default_factory=list)  # those Ray kept (best + latest)
    cut_by_budget: bool = False  # it ended once --time-budget was spent (`CUT_KEY`)


# results.parquet's first columns, in this order; the trial's `config/<param>` columns follow.
ROW_COLUMNS = [
    "trial_id", "model", "epoch", "val_mse", "objective", "val_mse_pixel255", "val_mae", "val_ssim",
    "val_psnr", "train_loss", "status", "stopped_early", "diverged", "error", "node_ip", "hostname",
    "node_id", "time_this_iter_s", "time_total_s", "train_seconds", "train_seconds_total", "epoch_seconds",
    "training_iteration", "epochs_planned", "resumed_from_epoch", "resume_note", "optuna_trial", "timestamp",
]
# What each config costs (`mmtune.training.cost.Cost`'s fields), reported by every trial row since
# the cost was recorded; kept after ROW_COLUMNS when present (an earlier sweep's results lack them).
FLOPS = "flops_per_sample"  # the cost --objective mse+flops minimises beside val_mse
COST_COLUMNS = ("params", FLOPS, "train_samples_per_s", "infer_ms_per_clip")
# Which phase of the sweep trained the row ("search": a Ray trial; "final": the best config continued on
# the whole machine, `mmtune.search.final`) and how many clips it trained on; kept when present (an
# earlier sweep's results lack them: read as "search", and NaN clips).
PHASE_COLUMNS = ("phase", "train_samples")
_NUMERIC = ("epoch", "val_mse", "objective", "val_mse_pixel255", "val_mae", "val_ssim", "val_psnr", "train_loss",
            "time_this_iter_s", "time_total_s", "train_seconds", "train_seconds_total", "epochs_planned")


def dedupe_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A trial's rows, one per epoch (the last report of an epoch that a retried trial reported twice)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for r in rows:
        by_epoch[int(r.get("epoch") or r.get("training_iteration") or 0)] = r
    return [by_epoch[k] for k in sorted(by_epoch)]


def _trial_rows(t: TrialRecord) -> list[dict[str, Any]]:
    rows = dedupe_rows(t.rows)
    last = max((int(r.get("epoch") or 0) for r in rows), default=0)
    planned = max((int(r.get("epochs_planned") or 0) for r in rows), default=0)
    infeasible = any(bool(r.get(INFEASIBLE_KEY)) for r in rows)
    outcome = classify(t.status, any(bool(r.get("diverged")) for r in rows), last, planned, t.cut_by_budget,
                       infeasible)
    common = {"trial_id": t.trial_id, "status": t.status, "stopped_early": outcome is Outcome.STOPPED_EARLY,
              CUT_KEY: outcome is Outcome.CUT_AT_BUDGET, INFEASIBLE_KEY: infeasible,
              "error": t.error or next((r.get("error") for r in rows if r.get(INFEASIBLE_KEY)), None),
              "optuna_trial": t.config.get("optuna_trial")}
    if not rows:  # a trial that failed before its first epoch still gets a row
        return [{**common, "model": t.config.get(MODEL_KEY), "epoch": 0, "val_mse": math.nan, "diverged": False,
                 **{f"config/{k}": v for k, v in t.config.items() if k != "optuna_trial"}}]
    out = []
    for r in rows:
        diverged = bool(r.get("diverged", False))
        row = {**common, "model": r.get("model") or t.config.get(MODEL_KEY),
               "epoch": int(r.get("epoch") or r.get("training_iteration") or 0),
               "val_mse": math.nan if diverged or infeasible else as_finite(r.get("val_mse")),
               "objective": as_finite(r.get("val_mse")), "diverged": diverged}
        row.update({k: r.get(k) for k in ROW_COLUMNS if k not in row})
        row.update({k: r[k] for k in (*COST_COLUMNS, *PHASE_COLUMNS) if k in r})
        row.update({k: v for k, v in r.items() if k.startswith("config/") and k != "config/optuna_trial"})
        out.append(row)
    return out


def results_frame(trials: list[TrialRecord]) -> Any:
    """Every trial x epoch as one DataFrame (the layout of results.parquet).

    `val_mse` is the truth (NaN when the trial diverged); `objective` is what Optuna and ASHA
    were told (a large finite stand-in for a diverged epoch). Rows that a retried trial reported
    twice for one epoch are kept once (the last).
    """
    import pandas as pd

    df = pd.DataFrame([row for t in trials for row in _trial_rows(t)])
    for key in ROW_COLUMNS:
        if key not in df:
            df[key] = None
    cols = ROW_COLUMNS + sorted(c for c in df.columns if c not in ROW_COLUMNS)
    return df[cols].sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)


def write_results(exp_dir: str | Path, df: Any) -> Path:
    """Write results.parquet (a `results_frame`), atomically."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return atomic_write_bytes(buf.getvalue(), Path(exp_dir) / RESULTS_FILE)


def read_results(exp_dir: str | Path) -> Any:
    """results.parquet with its types restored (ids and models as str, metrics as float, flags as bool).

    Raises:
        ExperimentFileError: it cannot be read, or lacks some of `ROW_COLUMNS`.
    """
    import pandas as pd

    try:
        df = pd.read_parquet(Path(exp_dir) / RESULTS_FILE)
    except Exception as exc:  # a half-written parquet raises pyarrow's own error types
        raise ExperimentFileError(f"{RESULTS_FILE} could not be read ({type(exc).__name__}: {exc})") from None
    missing = [c for c in ROW_COLUMNS if c not in df]
    if missing:
        raise ExperimentFileError(f"{RESULTS_FILE} lacks the columns {missing}: not schema {SCHEMA}'s layout")
    df = df.copy()
    for col in ("trial_id", "model"):
        df[col] = df[col].astype(str)
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in COST_COLUMNS:
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    df["phase"] = df["phase"].fillna("search").astype(str) if "phase" in df else "search"
    df["train_samples"] = pd.to_numeric(df["train_samples"], errors="coerce") if "train_samples" in df else math.nan
    for col in (CUT_KEY, INFEASIBLE_KEY):  # older files lack them
        if col not in df:
            df[col] = False
    for col in ("stopped_early", "diverged", CUT_KEY, INFEASIBLE_KEY):
        df[col] = df[col].fillna(False).astype(bool)
    df["status"] = df["status"].fillna("").astype(str).str.upper()
    return df


# -- JSON records ------------------------------------------------------------------------------

R = TypeVar("R")


def as_json(obj: Any) -> Any:
    """A record as JSON-able data; optional fields that are None are left out (other None values stay)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: as_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (getattr(obj, f.name) is None and f.default is None)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: as_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_json(v) for v in obj]
    return obj


def _record(cls: type[R], obj: Any, where: str, nested: Mapping[str, Callable[[Any, str], Any]] | None = None) -> R:
    """Build the record `cls` from a JSON object: unknown and missing keys are named."""
    if not isinstance(obj, dict):
        raise ExperimentFileError(f"{where}: expected an object, got {type(obj).__name__}")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    unknown = sorted(set(obj) - {f.name for f in fields})
    if unknown:
        raise ExperimentFileError(f"{where}: unknown keys {unknown} (schema {SCHEMA})")
    required = [f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in obj]
    if missing:
        raise ExperimentFileError(f"{where}: lacks {missing} (schema {SCHEMA})")
    values = {k: (nested[k](v, f"{where}.{k}") if nested and k in nested and v is not None else v)
              for k, v in obj.items()}
    return cls(**values)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExperimentFileError(f"{path.name} could not be read ({type(exc).__name__}: {exc})") from None


def _per_model(cls: type[R], path: Path) -> dict[str, R]:
    obj = _load_json(path)
    if not isinstance(obj, dict):
        raise ExperimentFileError(f"{path.name} holds a {type(obj).__name__}, expected an object of models")
    return {str(m): _record(cls, v, f"{path.name}: {m}") for m, v in obj.items()}


# -- sweep.json ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterInfo:
    """Resources of the Ray cluster the sweep ran on."""

    address: str | None
    cpus: float
    gpus: float
    nodes: int
    max_node_cpus: float
    max_node_gpus: float


@dataclass(frozen=True)
class EffectiveSettings:
    """The settings a sweep ran with, after its flags, its space's `sweep:` defaults and its protocol."""

    samples: int
    max_epochs: int
    grace_period: int
    reduction_factor: float
    max_concurrent: int
    cpus_per_trial: float
    gpus_per_trial: float
    train_overrides: dict[str, Any]  # seed, device, epochs, the protocol's train values


@dataclass(frozen=True)
class RunRecord:
    """One invocation of the sweep: the first run, then one per --resume."""

    started: str
    resume: bool
    ended: str | None = None
    wall_seconds: float | None = None
    status: str | None = None  # completed | interrupted; None while it runs


@dataclass(frozen=True)
class SweepMeta:
    """sweep.json: what was run, with what, on what, and how it went.

    Written when the sweep starts (status "running") and again when it ends, with the trial counts.
    """

    name: str
    models: tuple[str, ...]  # the space's model families
    args: dict[str, Any]  # the command line (`SweepArgs`) as run; --resume reads it back
    effective: EffectiveSettings
    space: str  # the space file it was given
    space_copy: str  # its copy in the experiment directory
    storage: str
    exp_dir: str
    cluster: ClusterInfo
    hardware: dict[str, Any]  # mmtune._hardware.machine(), its "versions" included
    started: str  # ISO 8601, of the first run
    runs: tuple[RunRecord, ...]
    status: str  # running | completed | interrupted
    protocol: dict[str, Any] | None = None  # mmtune.training.protocols.protocol_record
    ended: str | None = None
    wall_seconds: float | None = None  # summed over runs
    tune_seconds: float | None = None  # of the last run: its trials, before the test evaluation
    num_trials: int | None = None  # the counts are set when a run ends
    stopped_early: int | None = None
    cut_by_budget: int | None = None  # trials --time-budget's hard limit ended short of their epochs
    errored: int | None = None
    diverged: int | None = None
    infeasible: int | None = None  # trials refused before they started: their config cannot fit in memory
    trial_epochs: int | None = None
    median_trial_overhead_s: float | None = None
    median_trial_seconds: float | None = None
    objective: str = "mse"  # mse | mse+flops (the sweep's --objective)
    warm_start: dict[str, Any] | None = None  # warm_start.WarmStart.record(): where from, what was queued
    budget: dict[str, Any] | None = None  # --time-budget: budget_s, used_s, ended_by_budget, trials_started
    final: dict[str, Any] | None = None  # the final phase (`mmtune.search.final`): what it trained, from what, how long
    training_share: float | None = None  # of the machine's time in the trials and the final phase, the share spent training
    clip_spec: dict[str, int] | None = None  # mmtune.data.spec.ClipSpec of the data (None: written before it was kept)
    schema: int = SCHEMA


def write_sweep(exp_dir: str | Path, meta: SweepMeta) -> Path:
    """Write sweep.json, atomically."""
    return write_json(as_json(meta), Path(exp_dir) / SWEEP_FILE)


def read_sweep(exp_dir: str | Path) -> SweepMeta:
    """Read sweep.json.

    Raises:
        SchemaError: it is not of `SCHEMA` (an older mmtune's, or not mmtune's at all).
        ExperimentFileError: it cannot be read, or its record is incomplete.
    """
    path = Path(exp_dir) / SWEEP_FILE
    obj = _load_json(path)
    version = obj.get("schema") if isinstance(obj, dict) else None
    if version != SCHEMA:
        what = (f"schema {version!r}" if version is not None else
                "no schema version (an mmtune before schema 1 wrote it, or something else did)")
        raise SchemaError(f"{path} has {what}; this mmtune reads schema {SCHEMA} only: use the mmtune that "
                          f"wrote it, or run the sweep again with this one")
    return _record(SweepMeta, obj, SWEEP_FILE, {
        "models": lambda v, w: tuple(str(m) for m in v),
        "effective": lambda v, w: _record(EffectiveSettings, v, w),
        "cluster": lambda v, w: _record(ClusterInfo, v, w),
        "runs": lambda v, w: tuple(_record(RunRecord, r, f"{w}[{i}]") for i, r in enumerate(v)),
    })


# -- best_configs.json, test_metrics.json ----------------------------------------------------------


@dataclass(frozen=True)
class BestConfig:
    """The best trial of one model: best val MSE over all its epochs, and the checkpoint kept of it."""

    trial_id: str
    params: dict[str, Any]  # the sampled parameters (Optuna names)
    config: dict[str, Any]  # the full TrialConfig.to_dict()
    best_epoch: int
    val_mse: float | None  # None where it was not a finite number
    val_mse_pixel255: float | None = None
    val_ssim: float | None = None
    optuna_trial: int | None = None
    checkpoint: str | None = None  # None: no checkpoint of it was kept
    checkpoint_epoch: int | None = None


@dataclass(frozen=True)
class TestResult:
    """One model's best checkpoint on the test split; `error` (and no `test`) where it could not be run."""

    __test__ = False  # not a pytest test class

    trial_id: str
    test: dict[str, Any] | None = None  # mmtune.metrics: mse_frame, ..., and their *_per_step lists
    epoch: int | None = None  # of the checkpoint tested
    checkpoint: str | None = None
    val_mse: float | None = None
    test_size: int | None = None
    units: dict[str, str] | None = None  # mmtune.metrics.units.UNITS
    vs_best_baseline: dict[str, Any] | None = None  # mmtune.metrics.baselines.Verdict
    error: str | None = None


def write_best_configs(exp_dir: str | Path, best: Mapping[str, BestConfig]) -> Path:
    """Write best_configs.json (model -> `BestConfig`), atomically."""
    return write_json(as_json(dict(best)), Path(exp_dir) / BEST_CONFIGS_FILE)


def read_best_configs(exp_dir: str | Path) -> dict[str, BestConfig]:
    """Read best_configs.json. Raises ExperimentFileError when it cannot be read or is malformed."""
    return _per_model(BestConfig, Path(exp_dir) / BEST_CONFIGS_FILE)


def write_test_metrics(exp_dir: str | Path, tests: Mapping[str, TestResult]) -> Path:
    """Write test_metrics.json (model -> `TestResult`), atomically."""
    return write_json(as_json(dict(tests)), Path(exp_dir) / TEST_METRICS_FILE)


def read_test_metrics(exp_dir: str | Path) -> dict[str, TestResult]:
    """Read test_metrics.json. Raises ExperimentFileError when it cannot be read or is malformed."""
    return _per_model(TestResult, Path(exp_dir) / TEST_METRICS_FILE)


# -- train.json (a `mmtune train` run) -----------------------------------------------------------


@dataclass(frozen=True)
class TrainRecord:
    """train.json: how a `mmtune train` run went. Its test result is test_metrics.json's one entry
    (a `TestResult`, as in a sweep) and its baselines are baselines.json."""

    model: str
    status: str  # completed, diverged, ...: the fit's status
    message: str | None
    best_epoch: int | None
    config: dict[str, Any]  # TrialConfig.to_dict()
    protocol: dict[str, Any] | None  # mmtune.training.protocols.protocol_record
    device: str
    wall_seconds: float
    units: dict[str, str]
    clip_spec: dict[str, Any]


def write_train_record(out_dir: str | Path, record: TrainRecord) -> Path:
    """Write train.json, atomically."""
    return write_json(as_json(record), Path(out_dir) / TRAIN_FILE)


def read_train_record(out_dir: str | Path) -> TrainRecord:
    """Read train.json. Raises ExperimentFileError when it cannot be read or is malformed."""
    return _record(TrainRecord, _load_json(Path(out_dir) / TRAIN_FILE), TRAIN_FILE)


# -- baselines.json --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitBaselines:
    """The trivial baselines of one split."""

    size: int
    metrics: dict[str, dict[str, Any]]  # baseline name -> its metrics (mse_frame, ...)


@dataclass(frozen=True)
class Baselines:
    """baselines.json: `mmtune.metrics.baselines.split_baselines` of the sweep's data."""

    train_mean: float
    descriptions: dict[str, str]
    splits: dict[str, SplitBaselines]  # val, test

    @classmethod
    def from_dict(cls, obj: Any, where: str = BASELINES_FILE) -> Baselines:
        """From `split_baselines` output (or the file's JSON)."""
        return _record(cls, obj, where, {"splits": lambda v, w: {
            str(k): _record(SplitBaselines, s, f"{w}.{k}") for k, s in as_object(v, w).items()}})


def write_baselines(exp_dir: str | Path, baselines: Baselines) -> Path:
    """Write baselines.json, atomically."""
    return write_json(as_json(baselines), Path(exp_dir) / BASELINES_FILE)


def read_baselines(exp_dir: str | Path) -> Baselines:
    """Read baselines.json. Raises ExperimentFileError when it cannot be read or is malformed."""
    return Baselines.from_dict(_load_json(Path(exp_dir) / BASELINES_FILE))


def as_object(x: Any, where: str) -> dict[str, Any]:
    """`x` when it is a JSON object, else an ExperimentFileError naming `where`."""
    if not isinstance(x, dict):
        raise ExperimentFileError(f"{where}: expected an object, got {type(x).__name__}")
    return x


# -- predictions/<model>.npz, space.yaml -----------------------------------------------------------


class Prediction(NamedTuple):
    """Some test clips of one model: (n, T, H, W) float32 arrays in [0, 1], (n, T, C, H, W) for C > 1."""

    inputs: Any
    truth: Any
    pred: Any


def write_prediction(exp_dir: str | Path, model: str, prediction: Prediction, trial_id: str, epoch: int) -> Path:
    """Write predictions/<model>.npz, atomically (with the trial and epoch it came from)."""
    import numpy as np

    buf = io.BytesIO()
    arrays: dict[str, Any] = {k: np.asarray(v, dtype=np.float32) for k, v in prediction._asdict().items()}
    np.savez_compressed(buf, **arrays, trial_id=np.array(trial_id), epoch=np.array(epoch))
    return atomic_write_bytes(buf.getvalue(), Path(exp_dir) / PREDICTIONS_DIR / f"{model}.npz")


def prediction_files(exp_dir: str | Path) -> dict[str, Path]:
    """Model -> its predictions file."""
    return {p.stem: p for p in sorted((Path(exp_dir) / PREDICTIONS_DIR).glob("*.npz"))}


def read_prediction(path: str | Path) -> Prediction:
    """One predictions file. Raises ExperimentFileError when it cannot be read or is not (n, T, [C,] H, W)."""
    import numpy as np

    name = f"{PREDICTIONS_DIR}/{Path(path).name}"
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = [np.asarray(z[k], dtype=np.float32) for k in Prediction._fields]
    except Exception as exc:  # zipfile / KeyError / ValueError from a truncated file
        raise ExperimentFileError(f"{name} could not be read ({type(exc).__name__}: {exc})") from None
    if any(a.ndim not in (4, 5) or len(a) == 0 for a in arrays):
        raise ExperimentFileError(f"{name}: expected (n, T, [C,] H, W) arrays, got {[a.shape for a in arrays]}")
    return Prediction(*arrays)


def read_space(exp_dir: str | Path) -> dict[str, Any]:
    """The copy of the search space (space.yaml) as a mapping. Raises ExperimentFileError if unreadable."""
    import yaml

    path = Path(exp_dir) / SPACE_FILE
    try:
        obj = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ExperimentFileError(f"{SPACE_FILE} could not be read ({type(exc).__name__}: {exc})") from None
    return as_object(obj, SPACE_FILE)
