"""The one module that talks to Ray Tune: connect, run or restore a sweep, read its results back.

Ray's API has moved several times (`tune.run` -> `Tuner`, `session` -> `tune.report`), so every
`ray` call lives here; the rest of mmtune sees plain dataclasses (`TuneSettings` in,
`TuneOutcome` out). Trials run `train_fn`, a thin wrapper around `mmtune.training.loop.Trainer`;
what a trial reports each epoch is built by `mmtune.search.trial_log.TrialLog`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import posixpath
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna  # imported eagerly: a broken install would surface as "Optuna must be installed!")
import ray
from ray import tune
from ray.tune import Checkpoint, CheckpointConfig, FailureConfig, RunConfig
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from mmtune.errors import MMTuneError
from mmtune.experiment import (
    FLOPS,
    INFEASIBLE_KEY,
    MODEL_KEY,
    STATE_FILE,
    CheckpointRef,
    ClusterInfo,
    TrialRecord,
    is_uri,
)
from mmtune.search import owner
from mmtune.search.algorithms import get_sampler, get_scheduler
from mmtune.search.budget import BudgetPolicy
from mmtune.search.owner import Ident
from mmtune.search.searcher import (
    TRIAL_DIR_PREFIX,
    BudgetLimiter,
    RecordingOptunaSearch,
    Restoring,
    ray_trials_of,
)
from mmtune.search.spaces import SearchSpace, Suggest
from mmtune.search.tracking import LiveMLflow, TrialRun
from mmtune.search.trial_log import DIVERGED_VAL_MSE, METRIC, TB_DIR, TrialLog
from mmtune.search.warm_start import WarmStart, seed_study
from mmtune.training.memory import does_not_fit

MODE = "min"
TERMINAL = ("TERMINATED", "ERROR")
# Checkpoint folders kept per trial: the best by val_mse and the latest. Ray never deletes the
# latest and keeps `num_to_keep` best ones besides it, so num_to_keep=1 gives these two (with
# num_to_keep=2 a trial whose last epochs got worse kept 3, 27 MB each for simple_lstm hidden 128).
KEEP_CHECKPOINTS = 2


@dataclass(frozen=True)
class RunSpec:
    """What every trial needs besides its sampled config (shipped to workers with the trainable)."""

    space: SearchSpace
    train_overrides: dict[str, Any]  # epochs, seed, device
    cpus_per_trial: float = 1.0
    image_every: int = 2  # a predicted-frames image in TensorBoard every this many epochs
    gpus_per_trial: float = 0.0  # what a trial's memory is measured against (training/memory.py)
    exp_dir: str | None = None  # the experiment directory the driver owns (owner.py), as the driver sees it
    driver: Ident | None = None  # the driver that started the trial: a worker writes only while it owns exp_dir
    mlflow: LiveMLflow | None = None  # a shared MLflow store: each trial logs its own run, live (tracking.py)


class _Orphaned(Exception):
    """The driver that started this trial no longer owns the experiment: stop without writing."""


@dataclass(frozen=True)
class TuneSettings:
    """How to run the sweep (parsed CLI flags, already validated)."""

    name: str
    storage: str  # absolute local path or a URI
    study_db: str  # local path of the Optuna SQLite study
    samples: int
    scheduler: str  # a name in mmtune.search.algorithms.SCHEDULERS
    sampler: str  # a name in mmtune.search.algorithms.SAMPLERS
    seed: int
    max_epochs: int
    grace_period: int
    reduction_factor: float
    cpus_per_trial: float
    gpus_per_trial: float
    max_concurrent: int
    max_failures: int = 2
    verbose: int = 1
    multi_objective: bool = False  # minimise (val_mse, flops_per_sample) together; FIFO only
    budget_s: float | None = None  # --time-budget: no trial starts that would not end within it
    warm: WarmStart | None = None  # --warm-start: its configs seed the study and run first
    first: dict[str, Any] | None = None  # a config (by Optuna name) that runs first: the space's default one


@dataclass
class TuneOutcome:
    """What the sweep left: its trials; `interrupted` when it stopped before every trial ended
    (a time budget that ended it is not an interruption: `budget_ended`)."""

    trials: list[TrialRecord]
    interrupted: bool
    budget_ended: bool = False
    budget: BudgetPolicy | None = None  # --time-budget's soft limit as the run left it (refused, last_start)
    fit_seconds: float = 0.0  # Tuner.fit's wall time: what --time-budget counts


# -- the trainable --------------------------------------------------------------------------


def train_fn(config: dict[str, Any], run: RunSpec) -> None:
    """One trial: build its Trainer, resume from Tune's checkpoint, report once per epoch; with a
    lease on the experiment, and nothing written once its driver no longer owns it (owner.py)."""
    with contextlib.ExitStack() as stack:
        if run.driver is not None and run.exp_dir is not None:
            stack.enter_context(owner.lease(Path(run.exp_dir), run.driver))
        try:
            _train(config, run)
        except _Orphaned:
            return


def _train(config: dict[str, Any], run: RunSpec) -> None:
    from mmtune.training.loop import Trainer

    _quiet(run.cpus_per_trial)
    trial = run.space.trial_config(config, run.train_overrides)
    if (why := does_not_fit(trial, run.cpus_per_trial, run.gpus_per_trial)) is not None:
        # Refused before it starts: one row that says why, and Optuna told the worst value, so that
        # TPE learns the region (RecordingOptunaSearch marks the trial infeasible).
        tune.report({METRIC: DIVERGED_VAL_MSE, "epoch": 0, "epochs_planned": trial.train.epochs, "model": trial.model,
                     INFEASIBLE_KEY: True, "diverged": False, "error": why})
        return
    trainer, note, ctx = Trainer(trial, progress=False), "", tune.get_context()
    if (ckpt := tune.get_checkpoint()) is not None:  # another config's fails the trial; an unreadable one fails over
        trainer, note = resume_or_fail_over(trainer, ckpt, lambda: Trainer(trial, progress=False),
                                            f"trial {ctx.get_trial_id()}")
    node = _node()
    mlrun = TrialRun(run.mlflow, ctx.get_trial_id(), config, trial.model, node) if run.mlflow else None
    log = TrialLog(trial, os.path.join(ctx.get_trial_dir(), TB_DIR), node, trainer.epoch, note, run.image_every, mlrun)

    def on_epoch(result: Any, tr: Any) -> None:
        if run.driver is not None and run.exp_dir is not None and not owner.owned_by(Path(run.exp_dir), run.driver):
            raise _Orphaned  # its driver is gone (or another owns the experiment): write nothing more
        metrics = log.epoch(result, tr)
        if metrics["diverged"]:  # no checkpoint: the weights are NaN, and the best/last ones stay kept
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            tr.save(Path(tmp) / STATE_FILE, optimizer=not tr.finished)  # resuming a finished trial trains nothing
            tune.report(metrics, checkpoint=Checkpoint.from_directory(tmp))

    trainer.fit(on_epoch)
    log.close()


def _quiet(cpus: float) -> None:
    """A trial's torch threads (its CPUs), Ray's per-epoch "Checkpoint successfully created" silenced,
    and a worker stopped inside a callback exits without a traceback (`exit_when_stop_is_lost`)."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))
    for name in ("ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    sys.unraisablehook = exit_when_stop_is_lost


def exit_when_stop_is_lost(unraisable: Any) -> None:
    """`sys.unraisablehook` of a trial's worker.

    Ray stops a worker with SIGTERM, and its handler raises SystemExit. When the signal lands in a
    weakref callback or a `__del__` (a reused worker is stopped when the sweep ends), Python cannot
    raise it there: it prints "Exception ignored in ..." with a traceback, which Ray forwards to the
    sweep's stderr, and the worker runs on. The worker was being stopped, so it exits here, quietly;
    every other unraisable exception is printed as Python always does.
    """
    exc = unraisable.exc_value
    if isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.__unraisablehook__(unraisable)


def _node() -> dict[str, Any]:
    """Where this trial runs, for its rows."""
    return {"node_ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname(),
            "node_id": ray.get_runtime_context().get_node_id()}


def resume_or_fail_over(trainer: Any, ckpt: Checkpoint, fresh: Callable[[], Any], who: str) -> tuple[Any, str]:
    """Resume `trainer` from Ray's checkpoint; when that file is unusable, from the trial's newest
    older checkpoint that loads (Ray keeps the best one beside the latest), else from scratch.

    Args:
        trainer: a fresh Trainer of the trial.
        ckpt: the checkpoint Ray restores the trial from (its latest).
        fresh: builds another fresh Trainer (a half-loaded one is not trusted to start over from).
        who: how the note names the trial.

    Returns:
        The trainer to go on with, and a one-line note of what was done ("" when `ckpt` loaded),
        which is also printed on stderr.

    Raises:
        MMTuneError: the checkpoint was trained with another config than the trial's.
    """
    from mmtune.training.checkpoint import CheckpointError

    problem = ""
    for i, c in enumerate([ckpt, *_older_checkpoints(ckpt)]):
        try:
            with c.as_directory() as d:
                trainer.resume(Path(d) / STATE_FILE)
        except CheckpointError as exc:
            problem = problem or str(exc).split("; delete it")[0]
            continue
        if i == 0:
            return trainer, ""
        return trainer, _said(f"{who}: {problem}; failed over to {_name(c)} (epoch {trainer.epoch}), "
                              f"its previous checkpoint")
    return fresh(), _said(f"{who}: {problem}; no older checkpoint of it loads, so it is retrained from epoch 0")


def _said(note: str) -> str:
    """`note`, also printed on the console (the driver's log shows it)."""
    print_err(f"mmtune search: {note}")
    return note


_CHECKPOINT_DIR = re.compile(r"checkpoint_\d+")


def _name(ckpt: Checkpoint) -> str:
    return posixpath.basename(ckpt.path.rstrip("/"))


def _older_checkpoints(ckpt: Checkpoint) -> list[Checkpoint]:
    """The other checkpoint folders of `ckpt`'s trial that Ray wrote before it, newest first."""
    import pyarrow.fs

    parent, name = posixpath.split(ckpt.path.rstrip("/"))
    fs = ckpt.filesystem
    if fs is None:
        return []
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(parent))
    except OSError:  # the trial folder cannot be listed: nothing to fail over to
        return []
    names = sorted((i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory
                    and _CHECKPOINT_DIR.fullmatch(i.base_name) and i.base_name < name), reverse=True)
    return [Checkpoint(posixpath.join(parent, n), filesystem=fs) for n in names]


# -- cluster --------------------------------------------------------------------------------


def _check_reachable(address: str) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise MMTuneError(f"--address must be auto or HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            pass
    except OSError as exc:
        raise MMTuneError(f"--address {address}: no Ray head reachable there ({exc.strerror or exc})") from None


def connect(address: str | None) -> ClusterInfo:
    """Start a local Ray (address None) or join a cluster ("auto" or HOST:PORT)."""
    if address not in (None, "auto"):
        _check_reachable(address)
    # The new output engine prints Ray's progress table; Tune's own metrics go to the trial dirs.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Save the experiment state every 2 s (Ray: 10 s), so a driver that dies loses little; --resume
    # restarts a trial from its last checkpoint only if the state saw that checkpoint.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # With num_to_keep=1 Ray also snapshots the experiment at every checkpoint (so a crash never
    # leaves the state pointing at a deleted one) and warns when that is more than one per 5 s:
    # with short smoke epochs it always is, and the snapshot is a small JSON file.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if address is None:
        # A fresh local instance enables token auth and says so on stderr at every start: noise that
        # would turn an error found after connecting into more than one line.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        if address is None:
            # "local": always a fresh instance; plain ray.init() would join any `ray start` cluster
            # this machine happens to have (or a stale one's address file).
            ray.init(address="local", include_dashboard=False, ignore_reinit_error=True, configure_logging=True,
                     logging_level=logging.WARNING)
        else:
            ray.init(address=address, ignore_reinit_error=True, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MMTuneError(f"cannot connect to Ray at {address or 'a new local instance'}: {first}") from None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    res = ray.cluster_resources()
    return ClusterInfo(
        address=address,
        cpus=float(res.get("CPU", 0)),
        gpus=float(res.get("GPU", 0)),
        nodes=len(nodes),
        max_node_cpus=max((float(n["Resources"].get("CPU", 0)) for n in nodes), default=0.0),
        max_node_gpus=max((float(n["Resources"].get("GPU", 0)) for n in nodes), default=0.0),
    )


def shutdown() -> None:
    """Leave the cluster (or stop the local Ray)."""
    if ray.is_initialized():
        ray.shutdown()


def can_restore(exp_path: str) -> bool:
    """Whether `exp_path` holds a Tune experiment that `--resume` can continue."""
    return tune.Tuner.can_restore(exp_path)


# -- the sweep ------------------------------------------------------------------------------


def _scheduler(settings: TuneSettings) -> TrialScheduler:
    if not get_scheduler(settings.scheduler).rungs:
        return FIFOScheduler()
    # Rungs count our own "epoch", not Ray's training_iteration: a trial that fell back to an
    # older checkpoint (resume_or_fail_over) repeats epochs, and Ray's counter would run ahead.
    return ASHAScheduler(time_attr="epoch", max_t=settings.max_epochs, grace_period=settings.grace_period,
                         reduction_factor=settings.reduction_factor)


def trial_name(trial: Any) -> str:
    """Short trial names for Ray's table: MODEL_ID."""
    return f"{trial.config.get('model', 'trial')}_{trial.trial_id}"


def trial_dirname(trial: Any) -> str:
    """Short trial folder names (Ray's default packs every parameter into the name)."""
    return f"{TRIAL_DIR_PREFIX}{trial.trial_id}"


def _trainable(settings: TuneSettings, spec: RunSpec):
    fn = tune.with_parameters(train_fn, run=spec)
    return tune.with_resources(fn, {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})


def reuse_actors(settings: TuneSettings) -> bool:
    """Whether a trial's worker process runs the next trial too: on CPUs, yes (the next trial skips
    the actor start, torch's import and the first meta pass of its memory estimate, ~5-7 s on two
    cores); with GPUs, no (Ray's default: a reused actor kept GPU memory, ray #32698)."""
    return settings.gpus_per_trial == 0


def _run_config(settings: TuneSettings) -> RunConfig:
    return RunConfig(
        name=settings.name,
        storage_path=settings.storage,
        checkpoint_config=CheckpointConfig(
            num_to_keep=KEEP_CHECKPOINTS - 1, checkpoint_score_attribute=METRIC, checkpoint_score_order=MODE
        ),  # the best by val_mse, and the latest that Ray keeps besides it
        failure_config=FailureConfig(max_failures=settings.max_failures),
        verbose=settings.verbose,
    )


def run(settings: TuneSettings, spec: RunSpec, resume: bool = False) -> TuneOutcome:
    """Run the sweep (or restore an interrupted one) and read every trial back.

    A restore is the one place where mmtune lets pickles be read: Ray unpickles its experiment
    state (tuner.pkl, the trainable, the searcher's saved OptunaSearch with its sampler). The
    sweep's own driver wrote those files into its own experiment folder, and mmtune never ships
    them; trial checkpoints, which people do pass around, load as plain data (`load_checkpoint`).
    """
    exp_path = experiment_path(settings.storage, settings.name)
    limiter: BudgetLimiter | None = None
    if resume:
        tuner = tune.Tuner.restore(exp_path, trainable=_trainable(settings, spec),
                                   resume_unfinished=True, resume_errored=True)
        restored = ray_trials_of(tuner.get_results())
    else:
        limiter = BudgetLimiter(_searcher(settings, spec), settings.max_concurrent, settings.budget_s)
        tuner = tune.Tuner(
            _trainable(settings, spec),
            tune_config=tune.TuneConfig(
                search_alg=limiter, scheduler=_scheduler(settings), num_samples=settings.samples,
                reuse_actors=reuse_actors(settings), metric=METRIC, mode=MODE, time_budget_s=settings.budget_s,
                trial_name_creator=trial_name, trial_dirname_creator=trial_dirname,
            ),
            run_config=_run_config(settings),
        )
    interrupted, t0 = False, time.time()
    try:
        with Restoring.these(restored if resume else {}):
            grid = tuner.fit()
    except KeyboardInterrupt:
        interrupted = True
        grid = tune.Tuner.restore(exp_path, trainable=_trainable(settings, spec)).get_results()
    if limiter is not None and not interrupted:
        limiter.close_cut_trials()
    policy = limiter.policy if limiter is not None else None
    fit_s = time.time() - t0
    timed_out = settings.budget_s is not None and fit_s >= settings.budget_s
    cut = limiter.cut if limiter is not None else set()
    refused = policy is not None and policy.refused > 0
    outcome = _outcome(grid, settings.samples, interrupted, not interrupted and (refused or timed_out), cut)
    return dataclasses.replace(outcome, fit_seconds=fit_s, budget=policy)


def _searcher(settings: TuneSettings, spec: RunSpec) -> RecordingOptunaSearch:
    """OptunaSearch over the space, its study in SQLite: --warm-start's configs queued first, then the
    planned model of each other trial."""
    metric: str | list[str] = [METRIC, FLOPS] if settings.multi_objective else METRIC
    searcher = RecordingOptunaSearch(
        space=Suggest(spec.space), metric=metric, mode=[MODE, MODE] if settings.multi_objective else MODE,
        sampler=get_sampler(settings.sampler).build(settings.seed, settings.samples),
        storage=optuna.storages.RDBStorage(f"sqlite:///{settings.study_db}"), study_name=settings.name,
    )
    # model.weights: each trial's family is fixed in advance (define-by-run spaces ignore Ray's
    # points_to_evaluate, so through Optuna's own queue); the sampler fills in the rest.
    plan = spec.space.model_plan(settings.samples)
    study: Any = searcher._ot_study  # created by OptunaSearch.__init__, since a space is given
    if (plan or settings.warm or settings.first) and study is None:
        raise MMTuneError("OptunaSearch created no study; model.weights and --warm-start cannot be applied")
    if settings.warm is not None:
        seed_study(study, spec.space, settings.warm)
        for t in settings.warm.enqueued:  # a warm config takes the place of one planned trial of its model
            model = t.params.get(MODEL_KEY, spec.space.models[0])
            if model in plan:
                plan.remove(model)
    if settings.first is not None:  # before the planned trials: it takes the place of one of its model's
        study.enqueue_trial(settings.first, skip_if_exists=False)
        model = settings.first.get(MODEL_KEY, spec.space.models[0])
        if model in plan:
            plan.remove(model)
    for model in plan:
        study.enqueue_trial({MODEL_KEY: model}, skip_if_exists=False)
    return searcher


def experiment_path(storage: str, name: str) -> str:
    """Where Ray keeps the experiment `name` under `storage` (a local path or a URI)."""
    return f"{storage.rstrip('/')}/{name}" if is_uri(storage) else str(Path(storage) / name)


def _outcome(grid, samples: int, interrupted: bool, budget_ended: bool = False,
             cut: set[str] | None = None) -> TuneOutcome:
    statuses: dict[str, str] = {}
    analysis = getattr(grid, "_experiment_analysis", None)
    for t in getattr(analysis, "trials", None) or []:
        statuses[t.trial_id] = str(t.status)
    trials = []
    for result in grid:
        df = result.metrics_dataframe
        rows = [] if df is None else df.to_dict("records")
        trial_id = (result.metrics or {}).get("trial_id") or (rows[-1]["trial_id"] if rows else None)
        if trial_id is None:
            trial_id = Path(result.path).name
        error = None
        if result.error is not None:
            text = str(result.error).strip().splitlines()
            error = f"{type(result.error).__name__}: {text[-1] if text else ''}"
        checkpoints = [CheckpointRef(c.path, dict(m), c) for c, m in (result.best_checkpoints or [])]
        status = statuses.get(trial_id, "ERROR" if error else "TERMINATED")
        trials.append(TrialRecord(trial_id, status, dict(result.config or {}), rows, error, result.path,
                                  checkpoints, trial_id in (cut or ())))
    unfinished = [t for t in trials if t.status not in TERMINAL]
    short = len(trials) < samples and not budget_ended
    return TuneOutcome(trials, interrupted or bool(unfinished) or short, budget_ended)


def fetch_checkpoint(ref: CheckpointRef, dest: str) -> Path:
    """A checkpoint's state file on local disk (downloaded when the storage is a URI)."""
    if Path(ref.path, STATE_FILE).is_file():
        return Path(ref.path, STATE_FILE)
    handle = ref.handle if ref.handle is not None else Checkpoint(ref.path)
    return Path(handle.to_directory(dest), STATE_FILE)


def print_err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
