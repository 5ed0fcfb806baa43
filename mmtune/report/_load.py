"""Read an experiment directory into one `Experiment`, noting (never raising on) what is missing or bad.

The files and their records are `mmtune.experiment`'s: the report reads what the sweep
writes, through the same module. A directory of another schema is one MMTuneError, not a guess.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from mmtune.errors import MMTuneError
from mmtune.experiment import (
    BASELINES_FILE,
    BEST_CONFIGS_FILE,
    FILES,
    PREDICTIONS_DIR,
    RESULTS_FILE,
    SPACE_FILE,
    STUDY_FILE,
    SWEEP_FILE,
    TEST_METRICS_FILE,
    Baselines,
    BestConfig,
    ExperimentFileError,
    Prediction,
    SweepMeta,
    TestResult,
    best_row,
    prediction_files,
    read_baselines,
    read_best_configs,
    read_prediction,
    read_results,
    read_space,
    read_sweep,
    read_test_metrics,
    trial_outcomes,
)

T = TypeVar("T")


@dataclass
class Experiment:
    """Everything the report reads from one experiment directory; absent parts are empty."""

    path: Path
    name: str
    results: pd.DataFrame  # one row per trial x epoch (may be empty)
    best_configs: dict[str, BestConfig] = field(default_factory=dict)
    test_metrics: dict[str, TestResult] = field(default_factory=dict)
    baselines: Baselines | None = None
    predictions: dict[str, Prediction] = field(default_factory=dict)
    sweep: SweepMeta | None = None
    study_path: Path | None = None
    space: dict[str, Any] = field(default_factory=dict)  # space.yaml, as shown in the report
    notes: list[str] = field(default_factory=list)  # what could not be read, in words

    @property
    def models(self) -> list[str]:
        """Every model family named anywhere in the experiment, in a stable order."""
        names = list(self.sweep.models) if self.sweep else []
        if "model" in self.results:
            names += [str(m) for m in self.results["model"].dropna().unique()]
        names += list(self.best_configs) + list(self.test_metrics) + list(self.predictions)
        return list(dict.fromkeys(names))


def _read(path: Path, name: str, reader: Callable[[Path], T], default: T, notes: list[str],
          missing: str = "") -> T:
    """`reader(path)`, or `default` with a note when the file is absent or unreadable."""
    if not (path / name).exists():
        notes.append(f"{name} is missing{missing}")
        return default
    try:
        return reader(path)
    except ExperimentFileError as exc:
        notes.append(str(exc))
        return default


def _read_predictions(path: Path, notes: list[str]) -> dict[str, Prediction]:
    out: dict[str, Prediction] = {}
    if not (path / PREDICTIONS_DIR).is_dir():
        notes.append(f"{PREDICTIONS_DIR}/ is missing: no predicted frames to show")
        return out
    for model, f in prediction_files(path).items():
        try:
            out[model] = read_prediction(f)
        except ExperimentFileError as exc:
            notes.append(str(exc))
    return out


def load_experiment(exp_dir: str | Path) -> Experiment:
    """Read what there is of an experiment directory.

    Raises:
        MMTuneError: the directory does not exist, holds none of the sweep's files, or is of another
            schema than this mmtune's (`mmtune.experiment.SCHEMA`).
    """
    path = Path(exp_dir)
    if not path.is_dir():
        raise MMTuneError(f"experiment directory {str(path)!r} does not exist (expected the --storage/NAME of a sweep)")
    if not any((path / f).exists() for f in FILES):
        raise MMTuneError(f"{str(path)!r} holds none of {', '.join(FILES)}: not a sweep's experiment directory")
    notes: list[str] = []
    sweep: SweepMeta | None = _read(path, SWEEP_FILE, read_sweep, None, notes)  # SchemaError goes through
    results = _read(path, RESULTS_FILE, read_results, pd.DataFrame(), notes, ": no per-epoch results to plot")
    exp = Experiment(
        path=path,
        name=sweep.name if sweep else path.resolve().name,
        results=results.sort_values(["model", "trial_id", "epoch"], kind="stable").reset_index(drop=True)
        if not results.empty else results,
        best_configs=_read(path, BEST_CONFIGS_FILE, read_best_configs, {}, notes),
        test_metrics=_read(path, TEST_METRICS_FILE, read_test_metrics, {}, notes),
        baselines=_read(path, BASELINES_FILE, read_baselines, None, notes),
        predictions=_read_predictions(path, notes),
        sweep=sweep,
        study_path=(path / STUDY_FILE) if (path / STUDY_FILE).exists() else None,
        space=_read(path, SPACE_FILE, read_space, {}, notes),
        notes=notes,
    )
    if exp.results.empty and not exp.best_configs and not exp.test_metrics and not exp.predictions and not sweep:
        raise MMTuneError(f"nothing usable in {str(path)!r}: {'; '.join(notes)}")
    return exp


def trial_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: model, outcome, epochs run, best val MSE and the epoch it was reached at.

    Best is the minimum over all epochs, not the last value (a trial ASHA stopped early reached its
    value on a truncated budget; `outcome`, an `Outcome`, says so). Config columns are carried over
    from the best epoch's row (they are the same on every row of a trial).
    """
    cols = ["trial_id", "model", "outcome", "epochs", "best_epoch", "best_val_mse", "hours", "error"]
    if results.empty:
        return pd.DataFrame(columns=cols)
    outcomes = trial_outcomes(results)
    rows = []
    for (model, tid), g in results.groupby(["model", "trial_id"], sort=True):
        last, best = g.iloc[-1], best_row(g)
        seconds = float(g["time_this_iter_s"].sum(skipna=True)) if g["time_this_iter_s"].notna().any() else math.nan
        row = {
            "trial_id": str(tid),
            "model": str(model),
            "outcome": outcomes[str(tid)],
            "epochs": int(g["epoch"].max()) if g["epoch"].notna().any() else 0,
            "best_epoch": int(best["epoch"]) if best is not None else None,
            "best_val_mse": float(best["val_mse"]) if best is not None else math.nan,
            "hours": seconds / 3600.0,
            "error": last["error"] if isinstance(last["error"], str) else "",
        }
        for c in g.columns:
            if c.startswith("config/") or c in ("val_mse_pixel255", "val_mae", "val_ssim", "val_psnr", "node_ip", "hostname"):
                row[c] = (best if best is not None else last)[c]
        rows.append(row)
    return pd.DataFrame(rows)
