"""A sweep from end to end: plan it, run (or resume) it on Ray, evaluate what it found, write it.

Each step is a function of its own: `plan_sweep` validates everything into a `SweepPlan` before
anything is written or Ray is started; `fit_cluster` sizes it to the cluster; the adapter runs the
trials; `evaluate` tests each model's best checkpoint and computes the baselines (`Findings`);
`write_findings` writes them. The experiment directory's files and their records belong to
`mmtune.search.experiment`; only `tune_adapter` imports Ray.

Example:
    >>> from mmtune.search.sweep import SweepArgs, run_sweep
    >>> run_sweep(SweepArgs(space="search_spaces/smoke.yaml", samples=4))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmtune._hardware import machine
from mmtune._num import as_finite
from mmtune.data.datasets import DataConfig
from mmtune.errors import MMTuneError
from mmtune.metrics.units import UNITS
from mmtune.search import owner
from mmtune.search.algorithms import DEFAULT_SAMPLER, DEFAULT_SCHEDULER, get_sampler, get_scheduler
from mmtune.search.budget import format_duration
from mmtune.search.experiment import (
    INFEASIBLE_KEY,
    SPACE_FILE,
    STUDY_FILE,
    SWEEP_FILE,
    Baselines,
    BestConfig,
    CheckpointRef,
    ClusterInfo,
    EffectiveSettings,
    Prediction,
    RunRecord,
    SweepMeta,
    TestResult,
    TrialRecord,
    dedupe_rows,
    is_uri,
    read_sweep,
    results_frame,
    trial_counts,
    write_baselines,
    write_best_configs,
    write_prediction,
    write_results,
    write_sweep,
    write_test_metrics,
)
from mmtune.search.final import (
    REPORT_S,
    FinalStart,
    cpu_threads,
    family_infer_ms,
    reserve_for_test_s,
    run_final,
)
from mmtune.search.spaces import MODEL_KEY, SearchSpace, load_space
from mmtune.search.warm_start import DEFAULT_TOP_K, WarmStart
from mmtune.training.checkpoint import checksum_problem

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPACE = "search_spaces/default.yaml"
DEFAULT_STORAGE = "./experiments"
DEFAULT_SAMPLES = 8
PREDICTION_CLIPS = 4
# What the search minimises: val MSE alone, or val MSE and FLOPs per training sample together (a
# multi-objective Optuna study, whose Pareto front the report draws; FIFO only, since ASHA and
# Optuna's pruning take one metric).
OBJECTIVES = {"mse": "val MSE per frame", "mse+flops": "val MSE per frame and FLOPs per training sample (FIFO only)"}
DEFAULT_OBJECTIVE = "mse"


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
    objective: str = DEFAULT_OBJECTIVE  # a name in OBJECTIVES
    warm_start: str | None = None  # an earlier experiment directory whose top configs run first
    warm_start_top_k: int = DEFAULT_TOP_K
    time_budget: str | None = None  # a duration such as 30m: the whole sweep, its test and report included
    final_share: float | None = None  # of the time budget, the share for the final phase (None: the space's, else 0)
    no_search: bool = False  # train the space's default config for the whole --time-budget (the run to beat)

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


@dataclass(frozen=True)
class SweepPlan:
    """A validated sweep: every default resolved (flag, else the space's `sweep:`, else built in)."""

    args: SweepArgs  # as it runs: its name set; on --resume the saved ones, with where it runs updated
    storage: str  # the absolute local path, or the URI
    exp_dir: Path  # the local experiment directory
    space_path: Path  # the space file (on --resume: the experiment's copy)
    space: SearchSpace  # the protocol's data applied
    samples: int
    max_epochs: int  # every trial's epochs and ASHA's max_t
    grace_period: int
    reduction_factor: float
    train_overrides: dict[str, Any]  # seed, device, the protocol's train values, epochs
    previous: SweepMeta | None = None  # the sweep.json of the experiment being resumed
    warm: WarmStart | None = None  # --warm-start's configs (None on --resume: the study holds them)
    budget_s: float | None = None  # --time-budget in seconds (else the space's sweep.time_budget)
    final_share: float = 0.0  # of the budget, the final phase's share (0: none)

    @property
    def name(self) -> str:
        """The experiment's name."""
        return str(self.args.name)


@dataclass(frozen=True)
class Findings:
    """What evaluating a sweep's trials found, per model."""

    best_configs: dict[str, BestConfig]
    test_metrics: dict[str, TestResult]
    predictions: dict[str, Prediction]  # of the checkpoint test_metrics names
    baselines: Baselines


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


# -- plan --------------------------------------------------------------------------------------


def plan_sweep(args: SweepArgs) -> SweepPlan:
    """Resolve and validate everything the sweep needs; nothing is written and Ray is not started.

    Raises:
        MMTuneError: a flag, the space, the storage or the experiment to resume is unusable.
    """
    storage = _check_storage(args.storage, is_uri(args.storage))
    if args.name is not None and (not args.name or "/" in args.name or args.name.startswith(".")):
        raise MMTuneError(f"--name must be a plain folder name (no '/', not hidden), got {args.name!r}")
    local_root = Path(storage if not is_uri(storage) else DEFAULT_STORAGE).resolve()
    previous = None
    if args.resume:
        run_args, previous = _resumed(args, storage, local_root)
        space_path = local_root / str(args.name) / SPACE_FILE
    else:
        run_args, space_path = dataclasses.replace(args, name=args.name or default_name()), resolve_space_path(args.space)
        if (local_root / str(run_args.name)).exists():
            raise MMTuneError(f"experiment {local_root / str(run_args.name)} already exists; pass --resume --name "
                              f"{run_args.name} to continue it, or another --name")
    space = load_space(space_path)
    protocol = None
    if run_args.protocol:
        from mmtune.training.protocols import get_protocol

        protocol = get_protocol(run_args.protocol)
        space = dataclasses.replace(space, data={**space.data, **protocol.data})
    samples, max_epochs, grace, rf = _check_budget(run_args, space, protocol.train["epochs"] if protocol else None)
    overrides: dict[str, Any] = {"seed": run_args.seed, "device": "cuda" if run_args.gpus_per_trial > 0 else "cpu",
                                 **(protocol.train if protocol else {})}
    if run_args.max_epochs is not None or "max_epochs" in space.sweep or protocol:
        overrides["epochs"] = max_epochs
    budget_s, warm = _check_extras(run_args, space)
    final_share = _check_final(run_args, space, budget_s)
    return SweepPlan(run_args, storage, local_root / str(run_args.name), space_path, space, samples, max_epochs,
                     grace, rf, overrides, previous, warm, budget_s, final_share)


def _check_final(a: SweepArgs, space: SearchSpace, budget_s: float | None) -> float:
    """The final phase's share of the budget (--final-share, else the space's sweep.final_share, else 0)."""
    share = a.final_share if a.final_share is not None else space.sweep.get("final_share", 0.0)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
        raise MMTuneError(f"--final-share must be at least 0 and below 1, got {share!r}")
    if (share > 0 or a.no_search) and budget_s is None:
        raise MMTuneError(f"{'--no-search' if a.no_search else '--final-share'} needs a time budget: "
                          f"add --time-budget (e.g. 10m)")
    if (share > 0 or a.no_search) and a.gpus_per_trial > 0:
        raise MMTuneError(f"{'--no-search' if a.no_search else '--final-share'} trains on the driver's CPUs; "
                          f"use --final-share 0 with --gpus-per-trial")
    if a.no_search and a.resume:
        raise MMTuneError("--no-search runs no trials to resume; start it again with another --name")
    return float(share)


def _check_extras(a: SweepArgs, space: SearchSpace) -> tuple[float | None, WarmStart | None]:
    """--objective, --time-budget (its seconds) and --warm-start (its configs; read only on a new sweep)."""
    from mmtune.search.budget import parse_duration
    from mmtune.search.warm_start import plan_warm_start

    if a.objective not in OBJECTIVES:
        raise MMTuneError(f"--objective must be one of {list(OBJECTIVES)}, got {a.objective!r}")
    if a.objective != "mse" and get_scheduler(a.scheduler).rungs:
        raise MMTuneError(f"--objective {a.objective} is multi-objective, but --scheduler {a.scheduler} stops "
                          f"trials on one metric; add --scheduler fifo")
    budget = a.time_budget if a.time_budget is not None else space.sweep.get("time_budget")
    budget_s = parse_duration(budget) if budget is not None else None
    if isinstance(a.warm_start_top_k, bool) or not isinstance(a.warm_start_top_k, int) or a.warm_start_top_k < 1:
        raise MMTuneError(f"--warm-start-top-k must be a positive integer, got {a.warm_start_top_k!r}")
    if a.warm_start is None or a.resume:
        return budget_s, None
    warm = plan_warm_start(a.warm_start, space, a.warm_start_top_k)
    for trial_id, why in warm.incompatible:
        _say(f"mmtune search: --warm-start: trial {trial_id} left out: {why}")
    return budget_s, warm


def _resumed(args: SweepArgs, storage: str, local_root: Path) -> tuple[SweepArgs, SweepMeta]:
    """The saved arguments of the experiment --resume continues (where it runs may change), and its sweep.json."""
    if not args.name:
        raise MMTuneError("--resume needs --name (the experiment to continue)")
    from mmtune.search import tune_adapter as ta

    exp_dir = local_root / args.name
    exp_path = ta.experiment_path(storage, args.name)
    if not (exp_dir / SWEEP_FILE).is_file() or not ta.can_restore(exp_path):
        raise MMTuneError(f"--resume: no resumable experiment {args.name!r} under {args.storage} "
                          f"(expected {exp_path} with Ray's experiment state and {SWEEP_FILE})")
    owner.wait_until_free(exp_dir, say=_say)  # an earlier driver's workers may still be writing
    check_checkpoints(exp_dir)
    previous = read_sweep(exp_dir)
    keep = {k: v for k, v in previous.args.items() if k in {f.name for f in dataclasses.fields(SweepArgs)}}
    # The experiment is fixed (Ray cannot change it on restore); where it runs may change.
    run_args = dataclasses.replace(SweepArgs(**keep), resume=True, address=args.address, storage=args.storage,
                                   name=args.name, report=args.report, verbose=args.verbose)
    return run_args, previous


def _check_budget(a: SweepArgs, space: SearchSpace, protocol_epochs: int | None) -> tuple[int, int, int, float]:
    """(samples, max_epochs, grace_period, reduction_factor), every flag checked; the protocol's epochs
    are every trial's and ASHA's max_t unless --max-epochs is given."""
    d = space.sweep
    samples = a.samples if a.samples is not None else d.get("samples", DEFAULT_SAMPLES)
    max_epochs = a.max_epochs if a.max_epochs is not None else d.get("max_epochs", space.max_epochs)
    grace = a.grace_period if a.grace_period is not None else d.get("grace_period", 1)
    rf = a.reduction_factor if a.reduction_factor is not None else d.get("reduction_factor", 2)
    for key, v in (("samples", samples), ("max_epochs", max_epochs), ("grace_period", grace)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise MMTuneError(f"--{key.replace('_', '-')} must be a positive integer, got {v!r}")
    if isinstance(rf, bool) or not isinstance(rf, (int, float)) or not rf > 1:
        raise MMTuneError(f"--reduction-factor must be a number > 1, got {rf!r}")
    if grace > max_epochs:
        raise MMTuneError(f"--grace-period {grace} exceeds --max-epochs {max_epochs}")
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
    if protocol_epochs is not None and a.max_epochs is None:
        max_epochs = protocol_epochs
        if grace > max_epochs:
            raise MMTuneError(f"--grace-period {grace} exceeds the protocol's {max_epochs} epochs")
    return samples, max_epochs, grace, rf


def _check_storage(storage: str, uri: bool) -> str:
    """The absolute storage path (created and checked writable), or the URI unchanged."""
    if uri:
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


def fit_cluster(plan: SweepPlan, cluster: ClusterInfo) -> int:
    """Check that a trial fits on a node of `cluster`; how many trials run at once.

    Returns:
        --max-concurrent, else as many trials as the cluster's CPUs (and GPUs) fit, at least 1.
    """
    a = plan.args
    if a.address and not is_uri(plan.storage):
        _say(f"mmtune search: warning: --storage {plan.storage} is a local path; a multi-node sweep "
             f"needs a path every node shares (NFS) or a cloud URI (s3://..., gs://...)")
    if a.gpus_per_trial > cluster.max_node_gpus:
        raise MMTuneError(f"--gpus-per-trial {a.gpus_per_trial} but the largest node of the cluster "
                          f"has {cluster.max_node_gpus:g} GPU(s); use --gpus-per-trial 0 on CPU")
    if a.cpus_per_trial > cluster.max_node_cpus:
        raise MMTuneError(f"--cpus-per-trial {a.cpus_per_trial} but the largest node of the cluster "
                          f"has {cluster.max_node_cpus:g} CPU(s)")
    fits = int(cluster.cpus // a.cpus_per_trial)
    if a.gpus_per_trial > 0:
        fits = min(fits, int(round(cluster.gpus / a.gpus_per_trial, 6)))
    return a.max_concurrent or max(1, fits)


# -- run ---------------------------------------------------------------------------------------


def _start(plan: SweepPlan, cluster: ClusterInfo, max_concurrent: int, t_start: float) -> SweepMeta:
    """Create the experiment directory (a copy of the space, sweep.json "running"); its SweepMeta."""
    a, prev = plan.args, plan.previous
    plan.exp_dir.mkdir(parents=True, exist_ok=True)
    if prev is None:
        shutil.copyfile(plan.space_path, plan.exp_dir / SPACE_FILE)
    meta = SweepMeta(
        name=plan.name, models=plan.space.models, args=a.to_dict(),
        effective=EffectiveSettings(plan.samples, plan.max_epochs, plan.grace_period, plan.reduction_factor,
                                    max_concurrent, a.cpus_per_trial, a.gpus_per_trial, plan.train_overrides),
        space=str(plan.space_path), space_copy=SPACE_FILE, protocol=_protocol_meta(plan), storage=plan.storage,
        exp_dir=str(plan.exp_dir), cluster=cluster, hardware=machine(),
        started=prev.started if prev else _iso(t_start),
        runs=(*(prev.runs if prev else ()), RunRecord(_iso(t_start), a.resume)), status="running",
        objective=a.objective, warm_start=plan.warm.record() if plan.warm else (prev.warm_start if prev else None),
        budget={"budget_s": plan.budget_s, "budget": format_duration(plan.budget_s)} if plan.budget_s else None,
    )
    write_sweep(plan.exp_dir, meta)
    return meta


def _protocol_meta(plan: SweepPlan) -> dict[str, Any] | None:
    """sweep.json's record of the protocol the sweep followed (None without one)."""
    if not plan.args.protocol:
        return None
    from mmtune.data.datasets import DataConfig
    from mmtune.training.protocols import protocol_record

    overridden = ["epochs"] if plan.args.max_epochs is not None else []
    return protocol_record(plan.args.protocol, DataConfig.from_dict(plan.space.data), overridden)


def _search_budget(plan: SweepPlan, deadline: float | None) -> float | None:
    """The search's seconds: what is left of the budget, less a first guess of the test split's and the
    report's time (`REPORT_S` + a tenth of the budget; the final phase measures it), less the final
    phase's share."""
    if deadline is None or plan.budget_s is None:
        return None
    left = deadline - time.time() - (REPORT_S + 0.1 * plan.budget_s)
    return max(1.0, left * (1.0 - plan.final_share))


def _run_trials(plan: SweepPlan, meta: SweepMeta, budget_s: float | None, driver: owner.Ident) -> Any:
    """Run (or resume) the trials on Ray within `budget_s`, by `driver` (whose workers write only while
    it owns the experiment); the adapter's TuneOutcome."""
    from mmtune.search import tune_adapter as ta

    a, eff = plan.args, meta.effective
    settings = ta.TuneSettings(
        name=plan.name, storage=plan.storage, study_db=str(plan.exp_dir / STUDY_FILE), samples=plan.samples,
        scheduler=a.scheduler, sampler=a.sampler, seed=a.seed, max_epochs=plan.max_epochs,
        grace_period=plan.grace_period, reduction_factor=plan.reduction_factor, cpus_per_trial=a.cpus_per_trial,
        gpus_per_trial=a.gpus_per_trial, max_concurrent=eff.max_concurrent, verbose=a.verbose,
        multi_objective=a.objective != "mse", budget_s=budget_s, warm=plan.warm,
        # With a final phase, the space's default config runs first: the search then at worst continues
        # the run it has to beat, with less of the budget, and any config it finds better replaces it.
        first=plan.space.default_params() if plan.final_share > 0 and not a.resume else None,
    )
    spec = ta.RunSpec(space=plan.space, train_overrides=plan.train_overrides, cpus_per_trial=a.cpus_per_trial,
                      gpus_per_trial=a.gpus_per_trial, exp_dir=str(plan.exp_dir), driver=driver)
    extras = (f", objective {a.objective}"
              + (f", time budget {format_duration(plan.budget_s)} in all, {budget_s:.0f}s of it to search"
                 if plan.budget_s and budget_s else "")
              + (f", warm start: {len(plan.warm.enqueued)} configs of {plan.warm.source} first" if plan.warm else ""))
    _say(f"mmtune search: {plan.samples} trials of {plan.space.path} ({', '.join(plan.space.models)}), "
         f"{a.scheduler} over {plan.max_epochs} epochs, {eff.max_concurrent} at once on "
         f"{meta.cluster.nodes} node(s){extras} -> {plan.exp_dir}")
    return ta.run(settings, spec, resume=a.resume)


# -- evaluate ----------------------------------------------------------------------------------


def _model_of(trial: TrialRecord, space: SearchSpace) -> str:
    return str(trial.config.get(MODEL_KEY, space.models[0]) if len(space.models) > 1 else space.models[0])


def best_per_model(trials: list[TrialRecord], space: SearchSpace) -> dict[str, tuple[TrialRecord, dict[str, Any]]]:
    """Per model: (trial, row) of the lowest val MSE over all epochs of all rows that trained (not
    diverged, not infeasible)."""
    best: dict[str, tuple[TrialRecord, dict[str, Any]]] = {}
    for t in trials:
        for r in dedupe_rows(t.rows):
            if r.get("diverged") or r.get(INFEASIBLE_KEY):
                continue
            v = as_finite(r.get("val_mse"))
            if math.isnan(v):
                continue
            model = _model_of(t, space)
            if model not in best or v < as_finite(best[model][1]["val_mse"]):
                best[model] = (t, r)
    return best


def _checkpoint_for(trial: TrialRecord, epoch: int) -> CheckpointRef | None:
    """The kept checkpoint reported at `epoch` (Ray keeps the best by val_mse and the latest)."""
    for ref in trial.checkpoints:
        if int(ref.metrics.get("epoch", -1)) == epoch:
            return ref
    ok = [c for c in trial.checkpoints if not c.metrics.get("diverged")]
    return min(ok, key=lambda c: as_finite(c.metrics.get("val_mse"))) if ok else None


def evaluate(plan: SweepPlan, trials: list[TrialRecord]) -> Findings:
    """Test each model's best checkpoint on the held-out test split; the trivial baselines beside them."""
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    best_configs: dict[str, BestConfig] = {}
    tests: dict[str, TestResult] = {}
    predictions: dict[str, Prediction] = {}
    for model, (trial, row) in sorted(best_per_model(trials, plan.space).items()):
        cfg = plan.space.trial_config(trial.config, {**plan.train_overrides, "device": "auto"})
        ref = _checkpoint_for(trial, int(row.get("epoch") or 0))
        best_configs[model] = _best_config(trial, row, cfg.to_dict(), ref)
        tests[model], pred = _test(trial, cfg, ref, best_configs[model])
        if pred is not None:
            predictions[model] = pred
    baselines = _baselines(plan.space)
    return Findings(best_configs, _with_verdicts(tests, baselines), predictions, baselines)


def _best_config(trial: TrialRecord, row: dict[str, Any], config: dict[str, Any],
                 ref: CheckpointRef | None) -> BestConfig:
    return BestConfig(
        trial_id=trial.trial_id, params={k: v for k, v in trial.config.items() if k != "optuna_trial"},
        config=config, best_epoch=int(row.get("epoch") or 0), val_mse=as_finite(row.get("val_mse")),
        val_mse_pixel255=as_finite(row.get("val_mse_pixel255")), val_ssim=as_finite(row.get("val_ssim")),
        optuna_trial=trial.config.get("optuna_trial"), checkpoint=ref.path if ref is not None else None,
        checkpoint_epoch=int(ref.metrics.get("epoch", -1)) if ref is not None else None,
    )


def _test(trial: TrialRecord, cfg: Any, ref: CheckpointRef | None,
          best: BestConfig) -> tuple[TestResult, Prediction | None]:
    """The checkpoint `ref` on the test split, and its predictions of a few test clips."""
    from mmtune.search import tune_adapter
    from mmtune.training.loop import Trainer

    if ref is None:
        return TestResult(trial.trial_id, error="no checkpoint was kept"), None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            state = tune_adapter.fetch_checkpoint(ref, tmp)
            trainer = Trainer(cfg, progress=False)
            trainer.load_weights(state)
        test = trainer.test()
        pred = Prediction(*trainer.predict("test", n=min(PREDICTION_CLIPS, cfg.data.test_size)))
    except MMTuneError as exc:  # e.g. a corrupt checkpoint (sha256 mismatch): report it, go on
        return TestResult(trial.trial_id, error=str(exc)), None
    return TestResult(trial.trial_id, test=test, epoch=best.checkpoint_epoch, checkpoint=ref.path,
                      val_mse=best.val_mse, test_size=cfg.data.test_size, units=UNITS), pred


def _baselines(space: SearchSpace) -> Baselines:
    """The trivial baselines of the sweep's val and test splits (the data is the same for every trial)."""
    from mmtune.data.datasets import DataConfig, MovingMNIST
    from mmtune.metrics.baselines import split_baselines

    return Baselines.from_dict(split_baselines(MovingMNIST(DataConfig.from_dict(space.data))))


def _with_verdicts(tests: dict[str, TestResult], baselines: Baselines) -> dict[str, TestResult]:
    """Each tested model set beside the best test baseline (`vs_best_baseline`)."""
    from mmtune.metrics.baselines import verdict

    test_base = baselines.splits["test"].metrics
    return {m: dataclasses.replace(t, vs_best_baseline=verdict(t.test["mse_frame"], test_base)._asdict())
            if t.test is not None else t for m, t in tests.items()}


# -- write -------------------------------------------------------------------------------------


def write_findings(exp_dir: Path, found: Findings) -> None:
    """predictions/<model>.npz, baselines.json, best_configs.json and test_metrics.json."""
    for model, pred in found.predictions.items():
        tested = found.test_metrics[model]
        write_prediction(exp_dir, model, pred, tested.trial_id, int(tested.epoch if tested.epoch is not None else -1))
    write_baselines(exp_dir, found.baselines)
    write_best_configs(exp_dir, found.best_configs)
    write_test_metrics(exp_dir, found.test_metrics)


def _finish(meta: SweepMeta, status: str, df: Any, t_start: float, t_tuned: float, outcome: Any) -> SweepMeta:
    """The sweep.json of a run that ended: its run record closed, its counts set, its budget's use."""
    t_end = time.time()
    last = dataclasses.replace(meta.runs[-1], ended=_iso(t_end), wall_seconds=t_end - t_start, status=status)
    runs = (*meta.runs[:-1], last)
    counts = trial_counts(df)
    budget = None
    if meta.budget:  # used: this run's trials (Tuner.fit), as the budget counts; Ray's start and the test come besides
        budget = {**meta.budget, "used_s": outcome.fit_seconds, "sweep_s": t_end - t_start,
                  "search_s": outcome.budget.budget_s if outcome.budget else None,
                  "ended_by_budget": outcome.budget_ended, "trials_started": counts.get("num_trials"),
                  "refused": outcome.budget.refused if outcome.budget else 0, "cut": counts.get("cut_by_budget")}
        if outcome.budget and outcome.budget.last_start:  # the soft limit's last yes: when, and what it expected
            budget["last_start_s"], budget["last_expected_s"] = outcome.budget.last_start
    return dataclasses.replace(meta, runs=runs, ended=_iso(t_end), status=status, tune_seconds=t_tuned - t_start,
                               wall_seconds=sum(float(r.wall_seconds or 0) for r in runs), budget=budget, **counts)


def _annotate_study(exp_dir: Path, name: str, df: Any) -> None:
    """Mirror the results' per-trial facts into the Optuna study's user attributes where missing."""
    import optuna

    db = exp_dir / STUDY_FILE
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


# -- the whole sweep ---------------------------------------------------------------------------


def run_sweep(args: SweepArgs) -> SweepResult:
    """Plan the sweep, run (or resume) it, train the winner on what is left of the budget (with a
    final share), evaluate the best of each model, and write the experiment directory.

    Returns:
        Where the files went and whether every trial finished.
    """
    t_start = time.time()
    plan = plan_sweep(args)
    deadline = t_start + plan.budget_s if plan.budget_s else None
    if plan.args.no_search:
        return _run_no_search(plan, t_start, float(deadline or t_start))
    from mmtune.search import tune_adapter as ta

    cluster = ta.connect(plan.args.address)
    with contextlib.ExitStack() as stack:
        try:
            driver = stack.enter_context(owner.hold(plan.exp_dir))  # one driver at a time (owner.py)
            meta = _start(plan, cluster, fit_cluster(plan, cluster), t_start)
            outcome = _run_trials(plan, meta, _search_budget(plan, deadline), driver)
        finally:
            ta.shutdown()  # the final phase and the test split run in this process, on every CPU
        t_tuned = time.time()
        trials, final = list(outcome.trials), None
        if plan.final_share > 0 and deadline is not None and not outcome.interrupted:
            trials, final = _final_phase(plan, trials, deadline)
        return _conclude(plan, meta, outcome, trials, t_start, t_tuned, final)


def _run_no_search(plan: SweepPlan, t_start: float, deadline: float) -> SweepResult:
    """--no-search: the space's default config trained from scratch for the whole budget (no Ray)."""
    threads = cpu_threads()
    cluster = ClusterInfo(None, float(threads), 0.0, 1, float(threads), 0.0)
    with owner.hold(plan.exp_dir):
        meta = _start(plan, cluster, 1, t_start)
        start = FinalStart(plan.space.default_params())
        t0 = time.time()
        record = run_final(plan.space, plan.train_overrides, start, deadline, REPORT_S, plan.exp_dir, threads)
        final = _final_record(plan, start, record, t0, threads, REPORT_S)
        outcome = _NoTrials(trials=[record] if record else [], fit_seconds=0.0)
        return _conclude(plan, meta, outcome, list(outcome.trials), t_start, time.time(), final)


@dataclass
class _NoTrials:
    """The search's outcome when no search ran (--no-search): what `_finish` reads of a TuneOutcome."""

    trials: list[TrialRecord]
    fit_seconds: float
    interrupted: bool = False
    budget_ended: bool = True
    budget: Any = None


def _final_phase(plan: SweepPlan, trials: list[TrialRecord],
                 deadline: float) -> tuple[list[TrialRecord], dict[str, Any] | None]:
    """The best trial's best checkpoint continued on every CPU until the deadline (less the test's time)."""
    best = best_per_model(trials, plan.space)
    ranked = sorted(best.items(), key=lambda kv: as_finite(kv[1][1]["val_mse"]))
    ref = _checkpoint_for(ranked[0][1][0], int(ranked[0][1][1].get("epoch") or 0)) if ranked else None
    if ref is None:
        _say("mmtune search: final phase skipped: no trial kept a checkpoint to continue")
        return trials, None
    model, (trial, _row) = ranked[0]
    start = FinalStart({k: v for k, v in trial.config.items() if k != "optuna_trial"}, trial.trial_id, ref,
                       int(ref.metrics.get("epoch", 0)))
    threads = cpu_threads()
    test_clips = DataConfig.from_dict(plan.space.data).test_size
    reserve = reserve_for_test_s(trials, test_clips, threads, skip_model=model)
    t0 = time.time()
    record = run_final(plan.space, plan.train_overrides, start, deadline, reserve, plan.exp_dir, threads,
                       family_infer_ms(trials).get(model))
    return trials + ([record] if record else []), _final_record(plan, start, record, t0, threads, reserve)


def _final_record(plan: SweepPlan, start: FinalStart, record: TrialRecord | None, t0: float, threads: int,
                  reserve_s: float) -> dict[str, Any]:
    """sweep.json's `final`: what the final phase trained, from where, for how long, on what."""
    rows = record.rows if record else []
    return {"share": plan.final_share, "no_search": plan.args.no_search, "params": start.params,
            "source_trial": start.source, "source_epoch": start.epoch, "start": start.note(),
            "ran": record is not None, "seconds": time.time() - t0, "threads": threads, "reserve_s": reserve_s,
            "time_budget_s": rows[0].get("time_budget_s") if rows else None,
            "epochs": len(rows), "train_samples": int(sum(int(r.get("train_samples") or 0) for r in rows)),
            "best_val_mse": min((as_finite(r.get("val_mse")) for r in rows), default=None)}


def _conclude(plan: SweepPlan, meta: SweepMeta, outcome: Any, trials: list[TrialRecord], t_start: float,
              t_tuned: float, final: dict[str, Any] | None) -> SweepResult:
    """Write the results, test each model's best, write sweep.json, the report and the console summary."""
    df = results_frame(trials)
    write_results(plan.exp_dir, df)
    found = evaluate(plan, trials)
    write_findings(plan.exp_dir, found)
    _annotate_study(plan.exp_dir, plan.name, df)
    meta = _finish(meta, "interrupted" if outcome.interrupted else "completed", df, t_start, t_tuned, outcome)
    meta = dataclasses.replace(meta, final=final, training_share=training_share(df, meta.effective.max_concurrent,
                                                                                outcome.fit_seconds, final))
    write_sweep(plan.exp_dir, meta)
    if plan.args.report:
        _build_report(plan.exp_dir)
    _print_summary(plan.exp_dir, meta, found)
    return SweepResult(plan.exp_dir, meta.status, int(meta.num_trials or 0), float(meta.wall_seconds or 0.0))


def training_share(df: Any, slots: int, search_s: float, final: dict[str, Any] | None) -> float | None:
    """Of the machine's time in the search (`slots` x its seconds) and the final phase, the share spent
    in training steps (the rest: starting trials, validation, checkpoints, waiting)."""
    if df.empty:
        return None
    train = df["train_seconds"].astype(float).fillna(0.0)
    final_rows = (df["phase"] == "final") if "phase" in df else train != train  # no phase column: all search
    search_train = float(train[~final_rows].sum())
    final_train, final_s = float(train[final_rows].sum()), float(final["seconds"]) if final else 0.0
    wall = search_s + final_s
    return (search_train / max(slots, 1) + final_train) / wall if wall > 0 else None


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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


def _print_summary(exp_dir: Path, meta: SweepMeta, found: Findings) -> None:
    cut = f"{meta.cut_by_budget} cut at the time budget, " if meta.cut_by_budget else ""
    cut += f"{meta.infeasible} infeasible (too big for memory), " if meta.infeasible else ""
    print(f"sweep {meta.status}: {meta.num_trials} trials ({meta.stopped_early} stopped early, {cut}"
          f"{meta.errored} errored, {meta.diverged} diverged) in {meta.wall_seconds or 0:.0f}s -> {exp_dir}")
    for model, entry in sorted(found.best_configs.items()):
        tested = found.test_metrics.get(model)
        line = (f"  {model:12s} trial {entry.trial_id} epoch {entry.best_epoch}: "
                f"val mse_frame {as_finite(entry.val_mse):.2f}")
        if tested is not None and tested.test:
            test = tested.test
            line += f"  test mse_frame {test['mse_frame']:.2f} (per-frame), mse_pixel255 {test['mse_pixel255']:.1f}"
            vs = tested.vs_best_baseline
            if vs:
                line += f"  = {vs['ratio']:.2f}x the best baseline ({vs['baseline']} {vs['baseline_mse']:.2f})"
                if not vs["beats"]:
                    line += "  << DOES NOT BEAT THE BEST BASELINE: this model has not learned to predict"
        print(line)
    if meta.budget and meta.budget.get("used_s") is not None:
        b = meta.budget
        ended = ["the budget ended the sweep"] if b.get("ended_by_budget") else []
        if ended and b.get("refused"):
            ended.append(f"{b['refused']} trial(s) not started, as they would not have ended in time")
        if ended and b.get("cut"):
            ended.append(f"{b['cut']} trial(s) cut at the budget, at their last finished epoch")
        final_s = f" and the final phase {meta.final['seconds']:.0f}s" if meta.final and meta.final["ran"] else ""
        print(f"  time budget {b['budget']} for the whole sweep ({meta.wall_seconds or 0:.0f}s used): the search "
              f"ran {b['used_s']:.0f}s of its {b.get('search_s') or b['budget_s']:.0f}s{final_s}"
              + (f" ({'; '.join(ended)})" if ended else ""))
    if meta.final:
        f = meta.final
        if f["ran"]:
            print(f"  final phase: {f['start']}, {f['epochs']} validation(s), {f['train_samples']} clips in "
                  f"{f['seconds']:.0f}s on {f['threads']} thread(s), best val mse_frame {as_finite(f['best_val_mse']):.2f}")
        else:
            print(f"  final phase: not run ({f['start']}): too little of the budget was left")
    if meta.training_share is not None:
        print(f"  the machine spent {meta.training_share:.0%} of the trials' time in training steps "
              f"(median per-trial overhead {as_finite(meta.median_trial_overhead_s):.1f}s)")
    test_base = found.baselines.splits["test"]
    print(f"  baselines on the {test_base.size} test clips (no training), test mse_frame: "
          + ", ".join(f"{k} {v['mse_frame']:.2f}" for k, v in sorted(test_base.metrics.items(),
                                                                    key=lambda kv: kv[1]["mse_frame"])))
