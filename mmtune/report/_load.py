"""Read an experiment directory into one `Experiment`, noting (never raising on) what is missing or bad."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmtune.errors import MMTuneError

# The files a sweep writes; any of them may be absent while it runs or after it was interrupted.
KNOWN_FILES = ("results.parquet", "best_configs.json", "test_metrics.json", "baselines.json", "sweep.json",
               "study.db", "predictions")

# Trial outcome labels, one per trial (see `trial_outcomes`).
COMPLETED = "completed"
STOPPED_EARLY = "stopped early (ASHA)"
DIVERGED = "diverged (NaN)"
FAILED = "failed (error)"
RUNNING = "running"
PENDING = "pending"
OUTCOMES = (COMPLETED, STOPPED_EARLY, DIVERGED, FAILED, RUNNING, PENDING)


@dataclass
class Experiment:
    """Everything the report reads from one experiment directory; absent parts are empty."""

    path: Path
    name: str
    results: pd.DataFrame  # one row per trial x epoch (may be empty)
    best_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    test_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    baselines: dict[str, Any] = field(default_factory=dict)  # baselines.json (mmtune.metrics.baselines)
    predictions: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    sweep: dict[str, Any] = field(default_factory=dict)
    study_path: Path | None = None
    space: dict[str, Any] = field(default_factory=dict)  # the search space (sweep.json's, or space.yaml)
    notes: list[str] = field(default_factory=list)  # what could not be read, in words

    @property
    def models(self) -> list[str]:
        """Every model family named anywhere in the experiment, in a stable order."""
        names: list[str] = []
        declared = self.space.get("model")
        if isinstance(declared, dict):
            declared = declared.get("choices")
        if isinstance(declared, str):
            declared = [declared]
        if not isinstance(declared, list):
            declared = self.space.get("models")
        if isinstance(declared, dict | list):
            names += [str(m) for m in declared]
        if "model" in self.results:
            names += [str(m) for m in self.results["model"].dropna().unique()]
        names += list(self.best_configs) + list(self.test_metrics) + list(self.predictions)
        return list(dict.fromkeys(names))


def _read_json(path: Path, notes: list[str]) -> dict[str, Any]:
    if not path.exists():
        notes.append(f"{path.name} is missing")
        return {}
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        notes.append(f"{path.name} could not be read ({type(exc).__name__}: {exc})")
        return {}
    if not isinstance(obj, dict):
        notes.append(f"{path.name} holds a {type(obj).__name__}, expected an object")
        return {}
    return obj


def _read_results(path: Path, notes: list[str]) -> pd.DataFrame:
    if not path.exists():
        notes.append("results.parquet is missing: no per-epoch results to plot")
        return pd.DataFrame()
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # a half-written parquet raises pyarrow's own error types
        notes.append(f"results.parquet could not be read ({type(exc).__name__}: {exc})")
        return pd.DataFrame()
    missing = [c for c in ("trial_id", "model", "epoch", "val_mse") if c not in df]
    if missing:
        notes.append(f"results.parquet lacks the columns {missing}; its rows are ignored")
        return pd.DataFrame()
    df = df.copy()
    df["trial_id"] = df["trial_id"].astype(str)
    df["model"] = df["model"].astype(str)
    df["epoch"] = pd.to_numeric(df["epoch"], errors="coerce")
    for col in ("val_mse", "val_mse_pixel255", "val_mae", "val_ssim", "val_psnr", "train_loss",
                "time_this_iter_s", "train_seconds"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in ("stopped_early", "diverged"):
        df[col] = df[col].fillna(False).astype(bool) if col in df else False
    if "status" not in df:
        df["status"] = "TERMINATED"
    df["status"] = df["status"].fillna("").astype(str).str.upper()
    return df.sort_values(["model", "trial_id", "epoch"], kind="stable").reset_index(drop=True)


def _read_predictions(folder: Path, notes: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    if not folder.is_dir():
        notes.append("predictions/ is missing: no predicted frames to show")
        return out
    for f in sorted(folder.glob("*.npz")):
        try:
            with np.load(f, allow_pickle=False) as z:
                arrays = tuple(np.asarray(z[k], dtype=np.float32) for k in ("inputs", "truth", "pred"))
        except Exception as exc:  # zipfile / KeyError / ValueError from a truncated file
            notes.append(f"predictions/{f.name} could not be read ({type(exc).__name__}: {exc})")
            continue
        if any(a.ndim != 4 or len(a) == 0 for a in arrays):
            notes.append(f"predictions/{f.name}: expected (n, T, H, W) arrays, got {[a.shape for a in arrays]}")
            continue
        out[f.stem] = arrays  # type: ignore[assignment]
    return out


def _read_space(path: Path, sweep: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """The search space: inline in sweep.json, else the copy the sweep keeps (space.yaml)."""
    if isinstance(sweep.get("space"), dict):
        return sweep["space"]
    copy = path / str(sweep.get("space_copy") or "space.yaml")
    if not copy.is_file():
        return {}
    try:
        import yaml

        obj = yaml.safe_load(copy.read_text())
    except Exception as exc:  # OSError or yaml.YAMLError: the space is then inferred from the results
        notes.append(f"{copy.name} could not be read ({type(exc).__name__}: {exc})")
        return {}
    return obj if isinstance(obj, dict) else {}


def load_experiment(exp_dir: str | Path) -> Experiment:
    """Read what there is of an experiment directory.

    Raises:
        MMTuneError: the directory does not exist or holds none of the sweep's files.
    """
    path = Path(exp_dir)
    if not path.is_dir():
        raise MMTuneError(f"experiment directory {str(path)!r} does not exist (expected the --storage/NAME of a sweep)")
    if not any((path / f).exists() for f in KNOWN_FILES):
        raise MMTuneError(f"{str(path)!r} holds none of {', '.join(KNOWN_FILES)}: not a sweep's experiment directory")
    notes: list[str] = []
    sweep = _read_json(path / "sweep.json", notes)
    exp = Experiment(
        path=path,
        name=str(sweep.get("name") or path.resolve().name),
        results=_read_results(path / "results.parquet", notes),
        best_configs={k: v for k, v in _read_json(path / "best_configs.json", notes).items() if isinstance(v, dict)},
        test_metrics={k: v for k, v in _read_json(path / "test_metrics.json", notes).items() if isinstance(v, dict)},
        baselines=_read_json(path / "baselines.json", notes),
        predictions=_read_predictions(path / "predictions", notes),
        sweep=sweep,
        study_path=(path / "study.db") if (path / "study.db").exists() else None,
        space=_read_space(path, sweep, notes),
        notes=notes,
    )
    if exp.results.empty and not exp.best_configs and not exp.test_metrics and not exp.predictions and not sweep:
        raise MMTuneError(f"nothing usable in {str(path)!r}: {'; '.join(notes)}")
    return exp


def as_dict(x: Any) -> dict[str, Any]:
    """`x` if it is a dict, else an empty one (JSON from a partial run may hold anything)."""
    return x if isinstance(x, dict) else {}


def finite(x: Any) -> bool:
    """True for a real, finite number (False for None, NaN, inf and non-numbers)."""
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def trial_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: model, outcome, epochs run, best val MSE and the epoch it was reached at.

    Best is the minimum over all epochs, not the last value (a trial ASHA stopped early reached its
    value on a truncated budget; `outcome` says so). Config columns are carried over from the best
    epoch's row (they are the same on every row of a trial).
    """
    cols = ["trial_id", "model", "outcome", "epochs", "best_epoch", "best_val_mse", "hours", "error"]
    if results.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for (model, tid), g in results.groupby(["model", "trial_id"], sort=True):
        last = g.iloc[-1]
        status = str(last["status"])
        vals = g["val_mse"]
        ok = vals[np.isfinite(vals.to_numpy(dtype=float))]
        diverged = bool(g["diverged"].any()) or (len(g) > 0 and not finite(last["val_mse"]) and status != "ERROR")
        if status == "ERROR":
            outcome = FAILED
        elif diverged:
            outcome = DIVERGED
        elif bool(g["stopped_early"].any()):
            outcome = STOPPED_EARLY
        elif status == "RUNNING":
            outcome = RUNNING
        elif status == "PENDING":
            outcome = PENDING
        else:
            outcome = COMPLETED
        best_i = ok.idxmin() if len(ok) else g.index[-1]
        if "time_this_iter_s" in g and g["time_this_iter_s"].notna().any():
            seconds = float(g["time_this_iter_s"].sum(skipna=True))
        elif "train_seconds" in g and g["train_seconds"].notna().any():
            seconds = float(g["train_seconds"].max(skipna=True))
        else:
            seconds = math.nan
        row = {
            "trial_id": str(tid),
            "model": str(model),
            "outcome": outcome,
            "epochs": int(g["epoch"].max()) if g["epoch"].notna().any() else 0,
            "best_epoch": int(g.loc[best_i, "epoch"]) if len(ok) else None,
            "best_val_mse": float(ok.min()) if len(ok) else math.nan,
            "hours": seconds / 3600.0,
            "error": str(last["error"]) if "error" in g and isinstance(last.get("error"), str) and last["error"] else "",
        }
        for c in g.columns:
            if c.startswith("config/") or c in ("val_mse_pixel255", "val_mae", "val_ssim", "val_psnr", "node_ip", "hostname"):
                row[c] = g.loc[best_i, c]
        rows.append(row)
    return pd.DataFrame(rows)
