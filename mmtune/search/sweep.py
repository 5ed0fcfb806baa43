"""A sweep from end to end: validate, run (or resume) it on Ray, then write what it found.

The experiment directory (``--storage/NAME``) ends up holding, besides Ray's own files:

- ``results.parquet``: every trial x epoch (metrics, status, node, ``config/<param>`` columns)
- ``best_configs.json``: per model, the best trial (best val MSE over all epochs) and its config
- ``test_metrics.json``: per model, that trial's best checkpoint on the held-out test split, and
  its ratio to the best trivial baseline
- ``baselines.json``: the trivial baselines (blank, mean frame, last frame, ...) of val and test
- ``predictions/<model>.npz``: inputs, truth and prediction of 4 test clips
- ``study.db``: the Optuna study (SQLite), each trial with the epoch its value was reached at
- ``sweep.json``: the arguments, timings, status, hardware and versions; ``space.yaml``: the space

Only `tune_adapter` imports Ray; this module sees plain records.

Example:
    >>> from mmtune.search.sweep import SweepArgs, run_sweep
    >>> run_sweep(SweepArgs(space="search_spaces/smoke.yaml", samples=4))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmtune._hardware import machine
from mmtune._io import atomic_write_bytes, write_json
from mmtune._num import as_finite
from mmtune.errors import MMTuneError
from mmtune.metrics.units import UNITS
from mmtune.search.algorithms import DEFAULT_SAMPLER, DEFAULT_SCHEDULER, get_sampler, get_scheduler
from mmtune.search.spaces import MODEL_KEY, SearchSpace, load_space
from mmtune.training.checkpoint import checksum_problem

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPACE = "search_spaces/default.yaml"
DEFAULT_STORAGE = "./experiments"
DEFAULT_SAMPLES = 8
PREDICTION_CLIPS = 4


@dataclass(frozen=True)
class SweepArgs:
    """The sweep's command line, typed. None means "the default" (see `mmtune search --help`)."""

    space: str = DEFAULT_SPACE
    samples: int | None = None
    scheduler: str = DEFAULT_SCHEDULER
    sampler: str = DEFAULT_SAMPLER
    max_epochs: int | None = None
    grace_period: int | None = None
    reduction_factor: float | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    address: str | None = None
    storage: str = DEFAULT_STORAGE
    name: str | None = None
    resume: bool = False
    seed: int = 0
    report: bool = True
    verbose: int = 1
    protocol: str | None = None  # a named budget (mmtune.training.protocols) over the space's data/epochs

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SweepResult:
    """Where a finished (or interrupted) sweep wrote its files, and its status."""

    exp_dir: Path
    status: str  # completed | interrupted
    num_trials: int
    wall_seconds: float


def default_name() -> str:
    """A unique, sortable experiment name: sweep-YYYYmmdd-HHMMSS-xxxx."""
    return f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def resolve_space_path(path: str) -> Path:
    """The space file as given, else relative to the repository (so the default works from anywhere)."""
    p = Path(path)
    if p.is_file() or p.is_absolute():
        return p
    alt = REPO_ROOT / path
    return alt if alt.is_file() else p


def _check_args(a: SweepArgs, space: SearchSpace) -> dict[str, Any]:
    """Resolve defaults (flag, else the space's `sweep:`, else built in) and validate them."""
    sweep_defaults = space.sweep
    eff = {
        "samples": a.samples if a.samples is not None else sweep_defaults.get("samples", DEFAULT_SAMPLES),
        "max_epochs": a.max_epochs if a.max_epochs is not None else sweep_defaults.get("max_epochs", space.max_epochs),
        "grace_period": a.grace_period if a.grace_period is not None else sweep_defaults.get("grace_period", 1),
        "reduction_factor": a.reduction_factor if a.reduction_factor is not None
        else sweep_defaults.get("reduction_factor", 2),
    }
    for key in ("samples", "max_epochs", "grace_period"):
        v = eff[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise MMTuneError(f"--{key.replace('_', '-')} must be a positive integer, got {v!r}")
    rf = eff["reduction_factor"]
    if isinstance(rf, bool) or not isinstance(rf, (int, float)) or not rf > 1:
        raise MMTuneError(f"--reduction-factor must be a number > 1, got {rf!r}")
    if eff["grace_period"] > eff["max_epochs"]:
        raise MMTuneError(f"--grace-period {eff['grace_period']} exceeds --max-epochs {eff['max_epochs']}")
    get_scheduler(a.scheduler)
    get_sampler(a.sampler)
    if not (isinstance(a.cpus_per_trial, (int, float)) and a.cpus_per_trial > 0):
        raise MMTuneError(f"--cpus-per-trial must be > 0, got {a.cpus_per_trial!r}")
    if not (isinstance(a.gpus_per_trial, (int, float)) and 0 <= a.gpus_per_trial):
        raise MMTuneError(f"--gpus-per-trial must be >= 0, got {a.gpus_per_trial!r}")
    if a.gpus_per_trial > 1 and a.gpus_per_trial != int(a.gpus_per_trial):
        raise MMTuneError(f"--gpus-per-trial above 1 must be a whole number, got {a.gpus_per_trial}")
    if a.max_concurrent is not None and a.max_concurrent < 1:
        raise MMTuneError(f"--max-concurrent must be >= 1, got {a.max_concurrent}")
    if a.name is not None and (not a.name or "/" in a.name or a.name.startswith(".")):
        raise MMTuneError(f"--name must be a plain folder name (no '/', not hidden), got {a.name!r}")
    return eff


def _check_storage(storage: str, is_uri: bool) -> str:
    """The absolute storage path (created and checked writable), or the URI unchanged."""
    if is_uri:
        return storage
    path = Path(storage).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise MMTuneError(f"--storage {storage}: not writable ({exc.strerror or exc})") from None
    return str(path)


def check_checkpoints(exp_dir: Path) -> None:
    """Before --resume: every kept trial checkpoint must match its sha256 sidecar.

    In the middle of a sweep nobody is there to ask, so a trial whose checkpoint turns out corrupt
    fails over to its previous one, or retrains (`tune_adapter.resume_or_fail_over`). Before a
    --resume a person is: one line naming the file lets them put it back from a copy and keep the
    trial's epochs (a finished trial's best checkpoint is also what the test split is run on), and
    nothing of the experiment has been touched yet.
    """

    states = sorted(exp_dir.glob("trial_*/checkpoint_*/state.pt"))
    for state in states:
        why = checksum_problem(state, state.read_bytes(), require_sidecar=True)
        if why:
            raise MMTuneError(f"--resume: checkpoint {state} is corrupt ({why}; {len(states)} checked); "
                              f"put the file back from a copy, or start a new sweep with another --name")


# -- atomic writes --------------------------------------------------------------------------


def _write_parquet(df: Any, path: Path) -> None:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(buf.getvalue(), path)


# -- results --------------------------------------------------------------------------------

ROW_COLUMNS = [
    "trial_id", "model", "epoch", "val_mse", "objective", "val_mse_pixel255", "val_mae", "val_ssim",
    "val_psnr", "train_loss", "status", "stopped_early", "diverged", "error", "node_ip", "hostname",
    "node_id", "time_this_iter_s", "time_total_s", "train_seconds", "train_seconds_total", "epoch_seconds",
    "training_iteration", "epochs_planned", "resumed_from_epoch", "resume_note", "optuna_trial", "timestamp",
]


def results_frame(trials: list[Any]) -> Any:
    """Every trial x epoch as one DataFrame (the layout of results.parquet).

    `val_mse` is the truth (NaN when the trial diverged); `objective` is what Optuna and ASHA
    were told (a large finite stand-in for a diverged epoch). Rows that a retried trial reported
    twice for one epoch are kept once (the last).
    """
    import pandas as pd

    rows = []
    for t in trials:
        trial_rows = _dedupe(t.rows)
        last_epoch = max((int(r.get("epoch") or 0) for r in trial_rows), default=0)
        planned = max((int(r.get("epochs_planned") or 0) for r in trial_rows), default=0)
        diverged_trial = any(bool(r.get("diverged")) for r in trial_rows)
        stopped = (t.status == "TERMINATED" and not diverged_trial and t.error is None
                   and 0 < last_epoch < planned)
        for r in trial_rows:
            diverged = bool(r.get("diverged", False))
            row = {
                "trial_id": t.trial_id,
                "model": r.get("model") or t.config.get(MODEL_KEY),
                "epoch": int(r.get("epoch") or r.get("training_iteration") or 0),
                "val_mse": math.nan if diverged else as_finite(r.get("val_mse")),
                "objective": as_finite(r.get("val_mse")),
                "status": t.status,
                "stopped_early": stopped,
                "diverged": diverged,
                "error": t.error,
                "optuna_trial": t.config.get("optuna_trial"),
            }
            for key in ROW_COLUMNS:
                if key not in row:
                    row[key] = r.get(key)
            for key, value in r.items():
                if key.startswith("config/") and key != "config/optuna_trial":
                    row[key] = value
            rows.append(row)
        if not trial_rows:  # a trial that failed before its first epoch still gets a row
            rows.append({"trial_id": t.trial_id, "model": t.config.get(MODEL_KEY), "epoch": 0,
                         "val_mse": math.nan, "status": t.status, "stopped_early": False, "diverged": False,
                         "error": t.error, "optuna_trial": t.config.get("optuna_trial"),
                         **{f"config/{k}": v for k, v in t.config.items() if k != "optuna_trial"}})
    df = pd.DataFrame(rows)
    for key in ROW_COLUMNS:
        if key not in df:
            df[key] = None
    cols = ROW_COLUMNS + sorted(c for c in df.columns if c not in ROW_COLUMNS)
    return df[cols].sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)


def _dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_epoch: dict[int, dict[str, Any]] = {}
    for r in rows:
        by_epoch[int(r.get("epoch") or r.get("training_iteration") or 0)] = r
    return [by_epoch[k] for k in sorted(by_epoch)]


def _model_of(trial: Any, space: SearchSpace) -> str:
    return str(trial.config.get(MODEL_KEY, space.models[0]) if len(space.models) > 1 else space.models[0])


def best_per_model(trials: list[Any], space: SearchSpace) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Per model: (trial, row) of the lowest val MSE over all epochs of all non-diverged rows."""
    best: dict[str, tuple[Any, dict[str, Any]]] = {}
    for t in trials:
        for r in _dedupe(t.rows):
            if r.get("diverged"):
                continue
            v = as_finite(r.get("val_mse"))
            if math.isnan(v):
                continue
            model = _model_of(t, space)
            if model not in best or v < as_finite(best[model][1]["val_mse"]):
                best[model] = (t, r)
    return best


def _checkpoint_for(trial: Any, epoch: int) -> Any:
    """The kept checkpoint reported at `epoch` (Ray keeps the best by val_mse and the latest)."""
    for ref in trial.checkpoints:
        if int(ref.metrics.get("epoch", -1)) == epoch:
            return ref
    ok = [c for c in trial.checkpoints if not c.metrics.get("diverged")]
    return min(ok, key=lambda c: as_finite(c.metrics.get("val_mse"))) if ok else None


def _evaluate_best(exp_dir: Path, space: SearchSpace, best: dict[str, tuple[Any, dict[str, Any]]],
                   overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Test each model's best checkpoint; write predictions/<model>.npz. Returns (best_configs, test_metrics)."""
    import numpy as np
    import torch

    from mmtune.search import tune_adapter
    from mmtune.training.loop import Trainer

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    best_configs: dict[str, Any] = {}
    test_metrics: dict[str, Any] = {}
    for model, (trial, row) in sorted(best.items()):
        epoch = int(row.get("epoch") or 0)
        params = {k: v for k, v in trial.config.items() if k != "optuna_trial"}
        cfg = space.trial_config(trial.config, {**overrides, "device": "auto"})
        ref = _checkpoint_for(trial, epoch)
        entry = {
            "trial_id": trial.trial_id,
            "optuna_trial": trial.config.get("optuna_trial"),
            "params": params,
            "config": cfg.to_dict(),
            "best_epoch": epoch,
            "val_mse": as_finite(row.get("val_mse")),
            "val_mse_pixel255": as_finite(row.get("val_mse_pixel255")),
            "val_ssim": as_finite(row.get("val_ssim")),
            "checkpoint": ref.path if ref is not None else None,
            "checkpoint_epoch": int(ref.metrics.get("epoch", -1)) if ref is not None else None,
        }
        best_configs[model] = entry
        if ref is None:
            test_metrics[model] = {"trial_id": trial.trial_id, "error": "no checkpoint was kept"}
            continue
        try:
            with tempfile.TemporaryDirectory() as tmp:
                state = tune_adapter.fetch_checkpoint(ref, tmp)
                trainer = Trainer(cfg, progress=False)
                trainer.load_weights(state)
            test = trainer.test()
            inputs, truth, pred = trainer.predict("test", n=min(PREDICTION_CLIPS, cfg.data.test_size))
        except MMTuneError as exc:  # e.g. a corrupt checkpoint (sha256 mismatch): report it, go on
            test_metrics[model] = {"trial_id": trial.trial_id, "error": str(exc)}
            continue
        test_metrics[model] = {
            "trial_id": trial.trial_id,
            "epoch": entry["checkpoint_epoch"],
            "checkpoint": ref.path,
            "val_mse": entry["val_mse"],
            "test": test,
            "test_size": cfg.data.test_size,
            "units": UNITS,
        }
        buf = io.BytesIO()
        np.savez_compressed(buf, inputs=inputs.astype(np.float32), truth=truth.astype(np.float32),
                            pred=pred.astype(np.float32), trial_id=np.array(trial.trial_id),
                            epoch=np.array(entry["checkpoint_epoch"]))
        atomic_write_bytes(buf.getvalue(), exp_dir / "predictions" / f"{model}.npz")
    return best_configs, test_metrics


def _protocol_meta(args: SweepArgs, space: SearchSpace) -> dict[str, Any] | None:
    """sweep.json's record of the protocol the sweep followed (None without one)."""
    if not args.protocol:
        return None
    from mmtune.data.datasets import DataConfig
    from mmtune.training.protocols import protocol_record

    overridden = ["epochs"] if args.max_epochs is not None else []
    return protocol_record(args.protocol, DataConfig.from_dict(space.data), overridden)


def _baselines(space: SearchSpace) -> dict[str, Any]:
    """The trivial baselines of the sweep's val and test splits (the data is the same for every trial)."""
    from mmtune.data.datasets import DataConfig, MovingMNIST
    from mmtune.metrics.baselines import split_baselines

    return split_baselines(MovingMNIST(DataConfig.from_dict(space.data)))


def _add_verdicts(test_metrics: dict[str, Any], baselines: dict[str, Any]) -> None:
    """Set each tested model beside the best test baseline (`vs_best_baseline`), in place."""
    from mmtune.metrics.baselines import verdict

    test_base = baselines["splits"]["test"]["metrics"]
    for entry in test_metrics.values():
        if "test" in entry:
            entry["vs_best_baseline"] = verdict(entry["test"]["mse_frame"], test_base)._asdict()


def _summary_counts(df: Any) -> dict[str, Any]:
    if df.empty:
        return {"num_trials": 0, "stopped_early": 0, "errored": 0, "diverged": 0, "trial_epochs": 0}
    per_trial = df.groupby("trial_id").agg(
        status=("status", "last"), stopped=("stopped_early", "any"), diverged=("diverged", "any"),
        epochs=("epoch", "max"), total=("time_total_s", "max"), train=("train_seconds_total", "max"),
    )
    overheads = [float(r.total) - float(r.train) for r in per_trial.itertuples()
                 if as_finite(r.total) == as_finite(r.total) and as_finite(r.train) == as_finite(r.train)]
    return {
        "num_trials": int(len(per_trial)),
        "stopped_early": int(per_trial["stopped"].sum()),
        "errored": int((per_trial["status"] == "ERROR").sum()),
        "diverged": int(per_trial["diverged"].sum()),
        "trial_epochs": int(df[df["epoch"] > 0].shape[0]),
        "median_trial_overhead_s": statistics.median(overheads) if overheads else None,
        "median_trial_seconds": float(per_trial["total"].median()) if per_trial["total"].notna().any() else None,
    }


def _annotate_study(exp_dir: Path, name: str, df: Any) -> None:
    """Mirror the results' per-trial facts into the Optuna study's user attributes where missing."""
    import optuna

    db = exp_dir / "study.db"
    if not db.is_file() or df.empty:
        return
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return
    by_number = {int(n): g for n, g in df.dropna(subset=["optuna_trial"]).groupby("optuna_trial")}
    for ft in study.get_trials(deepcopy=False):
        g = by_number.get(ft.number)
        if g is None or "value_epoch" in ft.user_attrs:
            continue
        if ft.state.is_finished():
            continue  # finished trials are read-only in Optuna; the searcher wrote the attributes it had
        storage.set_trial_user_attr(ft._trial_id, "value_epoch", int(g["epoch"].max()))


def run_sweep(args: SweepArgs) -> SweepResult:
    """Validate everything, run (or resume) the sweep, and write the experiment directory.

    Returns:
        Where the files went and whether every trial finished.
    """
    from mmtune.search import tune_adapter as ta

    t_start = time.time()
    name: str = args.name or default_name()
    storage_is_uri = ta.is_uri(args.storage)
    storage = _check_storage(args.storage, storage_is_uri)
    if args.resume:
        if not args.name:
            raise MMTuneError("--resume needs --name (the experiment to continue)")
        exp_dir = Path(storage if not storage_is_uri else DEFAULT_STORAGE).resolve() / args.name
        saved = exp_dir / "sweep.json"
        exp_path = ta._join(storage, args.name)
        if not saved.is_file() or not ta.can_restore(exp_path):
            raise MMTuneError(f"--resume: no resumable experiment {args.name!r} under {args.storage} "
                              f"(expected {exp_path} with Ray's experiment state and sweep.json)")
        check_checkpoints(exp_dir)
        import json

        previous = json.loads(saved.read_text())
        keep = {k: v for k, v in previous["args"].items() if k in {f.name for f in dataclasses.fields(SweepArgs)}}
        # The experiment is fixed (Ray cannot change it on restore); where it runs may change.
        run_args = dataclasses.replace(SweepArgs(**keep), resume=True, address=args.address,
                                       storage=args.storage, name=args.name, report=args.report,
                                       verbose=args.verbose)
        space_path = exp_dir / "space.yaml"
    else:
        previous = None
        run_args = dataclasses.replace(args, name=name)
        space_path = resolve_space_path(args.space)
        local_root = Path(storage) if not storage_is_uri else Path(DEFAULT_STORAGE).resolve()
        exp_dir = local_root / name
        if exp_dir.exists():
            raise MMTuneError(f"experiment {exp_dir} already exists; pass --resume --name {run_args.name} "
                              f"to continue it, or another --name")
    space = load_space(space_path)
    protocol = None
    if run_args.protocol:
        from mmtune.training.protocols import get_protocol

        protocol = get_protocol(run_args.protocol)
        space = dataclasses.replace(space, data={**space.data, **protocol.data})
    eff = _check_args(run_args, space)
    if protocol and run_args.max_epochs is None:  # the protocol's epochs are every trial's and ASHA's max_t
        eff["max_epochs"] = protocol.train["epochs"]
        if eff["grace_period"] > eff["max_epochs"]:
            raise MMTuneError(f"--grace-period {eff['grace_period']} exceeds the protocol's {eff['max_epochs']} epochs")
    cluster = ta.connect(run_args.address)
    try:
        if run_args.address and not storage_is_uri:
            ta.print_err(f"mmtune search: warning: --storage {storage} is a local path; a multi-node sweep "
                         f"needs a path every node shares (NFS) or a cloud URI (s3://..., gs://...)")
        if run_args.gpus_per_trial > cluster.max_node_gpus:
            raise MMTuneError(f"--gpus-per-trial {run_args.gpus_per_trial} but the largest node of the cluster "
                              f"has {cluster.max_node_gpus:g} GPU(s); use --gpus-per-trial 0 on CPU")
        if run_args.cpus_per_trial > cluster.max_node_cpus:
            raise MMTuneError(f"--cpus-per-trial {run_args.cpus_per_trial} but the largest node of the cluster "
                              f"has {cluster.max_node_cpus:g} CPU(s)")
        fits = int(cluster.cpus // run_args.cpus_per_trial)
        if run_args.gpus_per_trial > 0:
            fits = min(fits, int(round(cluster.gpus / run_args.gpus_per_trial, 6)))
        max_concurrent = run_args.max_concurrent or max(1, fits)
        overrides: dict[str, Any] = {"seed": run_args.seed, "device": "cuda" if run_args.gpus_per_trial > 0 else "cpu",
                                     **(protocol.train if protocol else {})}
        if run_args.max_epochs is not None or "max_epochs" in space.sweep or protocol:
            overrides["epochs"] = eff["max_epochs"]
        exp_dir.mkdir(parents=True, exist_ok=True)
        if previous is None:
            shutil.copyfile(space_path, exp_dir / "space.yaml")
        settings = ta.TuneSettings(
            name=name, storage=storage, study_db=str(exp_dir / "study.db"), samples=eff["samples"],
            scheduler=run_args.scheduler, sampler=run_args.sampler, seed=run_args.seed,
            max_epochs=eff["max_epochs"], grace_period=eff["grace_period"],
            reduction_factor=eff["reduction_factor"], cpus_per_trial=run_args.cpus_per_trial,
            gpus_per_trial=run_args.gpus_per_trial, max_concurrent=max_concurrent, verbose=run_args.verbose,
        )
        spec = ta.RunSpec(space=space, train_overrides=overrides, cpus_per_trial=run_args.cpus_per_trial)
        meta: dict[str, Any] = {
            "name": run_args.name,
            "args": run_args.to_dict(),
            "effective": {**eff, "max_concurrent": max_concurrent, "train_overrides": overrides},
            "space": str(space_path),
            "space_copy": "space.yaml",
            "protocol": _protocol_meta(run_args, space),
            "storage": storage,
            "exp_dir": str(exp_dir),
            "cluster": dataclasses.asdict(cluster),
            "hardware": machine(),
            "started": (previous or {}).get("started", _iso(t_start)),
            "runs": (previous or {}).get("runs", []) + [{"started": _iso(t_start), "resume": run_args.resume}],
            "status": "running",
        }
        write_json(meta, exp_dir / "sweep.json")
        ta.print_err(f"mmtune search: {eff['samples']} trials of {space.path} ({', '.join(space.models)}), "
                     f"{run_args.scheduler} over {eff['max_epochs']} epochs, {max_concurrent} at once on "
                     f"{cluster.nodes} node(s) -> {exp_dir}")
        outcome = ta.run(settings, spec, resume=run_args.resume)
        status = "interrupted" if outcome.interrupted else "completed"
        t_tuned = time.time()
        df = results_frame(outcome.trials)
        _write_parquet(df, exp_dir / "results.parquet")
        best = best_per_model(outcome.trials, space)
        best_configs, test_metrics = _evaluate_best(exp_dir, space, best, overrides)
        baselines = _baselines(space)
        write_json(baselines, exp_dir / "baselines.json")
        _add_verdicts(test_metrics, baselines)
        write_json(best_configs, exp_dir / "best_configs.json")
        write_json(test_metrics, exp_dir / "test_metrics.json")
        _annotate_study(exp_dir, name, df)
    finally:
        ta.shutdown()
    t_end = time.time()
    meta["runs"][-1].update({"ended": _iso(t_end), "wall_seconds": t_end - t_start, "status": status})
    meta.update({
        "ended": _iso(t_end),
        "wall_seconds": sum(float(r.get("wall_seconds") or 0) for r in meta["runs"]),
        "tune_seconds": t_tuned - t_start,
        "status": status,
        **_summary_counts(df),
    })
    write_json(meta, exp_dir / "sweep.json")
    if run_args.report:
        _build_report(exp_dir)
    _print_summary(exp_dir, status, best_configs, test_metrics, baselines, meta)
    return SweepResult(exp_dir, status, meta["num_trials"], meta["wall_seconds"])


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def _build_report(exp_dir: Path) -> None:
    try:
        from mmtune.report import build_report
    except ImportError:
        return
    try:
        path = build_report(exp_dir)
        print(f"report: {path}", file=sys.stderr)
    except Exception as exc:  # the sweep's results are written; a report bug must not hide them
        print(f"mmtune search: warning: the report failed ({type(exc).__name__}: {exc})", file=sys.stderr)


def _print_summary(exp_dir: Path, status: str, best_configs: dict[str, Any], test_metrics: dict[str, Any],
                   baselines: dict[str, Any], meta: dict[str, Any]) -> None:
    print(f"sweep {status}: {meta['num_trials']} trials ({meta['stopped_early']} stopped early, "
          f"{meta['errored']} errored, {meta['diverged']} diverged) in {meta['wall_seconds']:.0f}s -> {exp_dir}")
    for model, entry in sorted(best_configs.items()):
        test = (test_metrics.get(model) or {}).get("test") or {}
        line = f"  {model:12s} trial {entry['trial_id']} epoch {entry['best_epoch']}: val mse_frame {entry['val_mse']:.2f}"
        if test:
            line += f"  test mse_frame {test['mse_frame']:.2f} (per-frame), mse_pixel255 {test['mse_pixel255']:.1f}"
            vs = test_metrics[model].get("vs_best_baseline")
            if vs:
                line += f"  = {vs['ratio']:.2f}x the best baseline ({vs['baseline']} {vs['baseline_mse']:.2f})"
                if not vs["beats"]:
                    line += "  << DOES NOT BEAT THE BEST BASELINE: this model has not learned to predict"
        print(line)
    test_base = baselines["splits"]["test"]
    print(f"  baselines on the {test_base['size']} test clips (no training), test mse_frame: "
          + ", ".join(f"{k} {v['mse_frame']:.2f}" for k, v in sorted(test_base["metrics"].items(),
                                                                    key=lambda kv: kv[1]["mse_frame"])))
