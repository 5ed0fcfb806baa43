"""A sweep's plan: its command line typed (`SweepArgs`), validated into a `SweepPlan` before anything
is written or Ray is started, and sized to the cluster it gets (`fit_cluster`).

`plan_sweep` reads the space, the protocol, the budget and, on --resume, the experiment to
continue (waiting for an earlier driver's workers, checking its checkpoints); every problem is
an MMTuneError, one line. `mmtune.search.sweep` runs the plan.
"""

from __future__ import annotations

import dataclasses
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmtune.errors import MMTuneError
from mmtune.experiment import (
    SPACE_FILE,
    SWEEP_FILE,
    ClusterInfo,
    SweepMeta,
    is_uri,
    read_sweep,
)
from mmtune.search import owner
from mmtune.search.algorithms import DEFAULT_SAMPLER, DEFAULT_SCHEDULER, get_sampler, get_scheduler
from mmtune.search.warm_start import DEFAULT_TOP_K, WarmStart

if TYPE_CHECKING:  # the space parser needs the model registry (torch), which `mmtune report`'s CLI does not
    from mmtune.search.spaces import SearchSpace

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPACE = "search_spaces/default.yaml"
DEFAULT_STORAGE = "./experiments"
DEFAULT_SAMPLES = 8
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
    tracker: list[str] = dataclasses.field(default_factory=list)  # --tracker flags, as given (mlflow=URI ...)
    tracker_live: bool = False  # each trial logs its MLflow run from its worker, even to a SQLite file

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able)."""
        return dataclasses.asdict(self)


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
    from mmtune.search.spaces import load_space

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
                                   name=args.name, report=args.report, verbose=args.verbose,
                                   tracker=args.tracker, tracker_live=args.tracker_live)
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

    from mmtune.training.checkpoint import checksum_problem

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


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
