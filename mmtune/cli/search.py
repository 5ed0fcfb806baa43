"""`mmtune search` (and `python run_search.py`): the sweep's command line."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from mmtune.cli._common import add_tracker_argument
from mmtune.search.algorithms import DEFAULT_SAMPLER, DEFAULT_SCHEDULER, SAMPLERS, SCHEDULERS, help_text
from mmtune.search.plan import (
    DEFAULT_OBJECTIVE,
    DEFAULT_SAMPLES,
    DEFAULT_SPACE,
    DEFAULT_STORAGE,
    OBJECTIVES,
    SweepArgs,
)
from mmtune.search.warm_start import DEFAULT_TOP_K

# What the command above search does with a sweep: called with the flags before the sweep, it
# returns what to do with the experiment directory once it is written (the report, the trackers).
After = Callable[[argparse.Namespace], Callable[[Path], None]]

HELP = "hyperparameter sweep: Ray Tune over an Optuna search space, ASHA early stopping"
EPILOG = """examples:
  run_search.py                                            # the default: a small all-models CPU sweep
  run_search.py --space search_spaces/smoke.yaml           # about 2 minutes on 2 CPU cores
  run_search.py --space search_spaces/all_models.yaml --samples 64 --gpus-per-trial 0.25
  run_search.py --address auto --storage s3://bucket/mmtune   # on a running Ray cluster
  run_search.py --resume --name sweep-20260101-120000-ab12    # continue an interrupted sweep
  run_search.py --time-budget 30m                          # the whole sweep, its test and report in 30 minutes
  run_search.py --time-budget 10m --no-search              # the space's default config alone, for the same time
  run_search.py --objective mse+flops --scheduler fifo     # the MSE/FLOPs Pareto front (multi-objective)
  run_search.py --warm-start experiments/sweep-20260101-120000-ab12   # its best configs run first
  run_search.py --tracker mlflow --tracker wandb           # also log the trials to MLflow and W&B (offline)
"""


def _one_line_error(parser: argparse.ArgumentParser):
    def error(message: str) -> NoReturn:
        print(f"{parser.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)

    return error


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The sweep's flags; every default is named in --help."""
    _search_arguments(p)
    _where_arguments(p)
    _budget_arguments(p)
    add_tracker_argument(p, "sweep", "each trial a run, the sweep a parent run holding its files")
    p.add_argument("--tracker-live", action="store_true",
                   help="each trial logs its MLflow run itself, epoch by epoch, from the node that trains it; the "
                        "driver then logs the sweep's run and each trial's outcome. This is the default when "
                        "--tracker mlflow=URI names a store every node can write (http(s)://, databricks, a "
                        "database); the flag asks for it with a SQLite file too, which only suits one machine "
                        "or a few trials at once (default off: the driver logs every trial after the sweep)")
    p.add_argument("--no-report", dest="report", action="store_false",
                   help="skip the HTML report at the end (default: write it when mmtune.report exists)")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                   help="Ray's console output: 0 quiet, 1 progress table, 2 every result (default 1)")


def _search_arguments(p: argparse.ArgumentParser) -> None:
    """What is searched, and how: the space, the trials, the scheduler and sampler, the epochs."""
    p.add_argument("--space", default=DEFAULT_SPACE, metavar="FILE",
                   help=f"search-space YAML (default {DEFAULT_SPACE}: a small all-models sweep)")
    p.add_argument("--samples", type=int, metavar="N",
                   help=f"number of trials (default: the space's sweep.samples, else {DEFAULT_SAMPLES})")
    p.add_argument("--scheduler", choices=list(SCHEDULERS), default=DEFAULT_SCHEDULER,
                   help=help_text(SCHEDULERS, DEFAULT_SCHEDULER))
    p.add_argument("--sampler", choices=list(SAMPLERS), default=DEFAULT_SAMPLER,
                   help=help_text(SAMPLERS, DEFAULT_SAMPLER, "Optuna sampler, seeded by --seed: "))
    p.add_argument("--protocol", metavar="NAME",
                   help="a named budget over the space's data and epochs: reference (8,000/1,000/1,000 clips, "
                        "5 epochs, batch 16; the reference report's). --max-epochs overrides its epochs "
                        "(default: none, the space's own)")
    p.add_argument("--max-epochs", type=int, metavar="N",
                   help="epochs of every trial and ASHA's max_t (default: the space's sweep.max_epochs, "
                        "else its epochs)")
    p.add_argument("--grace-period", type=int, metavar="N",
                   help="epochs before ASHA may stop a trial (default: the space's sweep.grace_period, else 1)")
    p.add_argument("--reduction-factor", type=float, metavar="F",
                   help="ASHA keeps 1/F of the trials at each rung (default: the space's "
                        "sweep.reduction_factor, else 2)")


def _where_arguments(p: argparse.ArgumentParser) -> None:
    """Where the trials run and where the experiment goes."""
    p.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="N",
                   help="CPUs each trial reserves, also its torch threads (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, metavar="G",
                   help="GPUs each trial reserves; a fraction such as 0.25 packs 4 trials on one GPU "
                        "(default 0: CPU training)")
    p.add_argument("--max-concurrent", type=int, metavar="N",
                   help="trials running at once (default: as many as the cluster's CPUs/GPUs fit)")
    p.add_argument("--address", metavar="auto|HOST:PORT",
                   help="a running Ray cluster to join (default: none, start a local Ray)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, metavar="PATH_OR_URI",
                   help=f"where the experiment directory NAME goes; multi-node needs a shared path "
                        f"or a URI (default {DEFAULT_STORAGE})")
    p.add_argument("--name", help="experiment name (default sweep-YYYYmmdd-HHMMSS-xxxx, unique)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted experiment --name (its saved settings; default off)")


def _budget_arguments(p: argparse.ArgumentParser) -> None:
    """What the sweep optimises and on what budget: the objective, the time, the final phase, the start."""
    p.add_argument("--objective", choices=list(OBJECTIVES), default=DEFAULT_OBJECTIVE,
                   help="; ".join(f"{k}: {v}" for k, v in OBJECTIVES.items()) + f" (default {DEFAULT_OBJECTIVE})")
    p.add_argument("--time-budget", metavar="DURATION",
                   help="wall time for the whole sweep, e.g. 90s, 10m, 2h, 1h30m, its test split and report "
                        "included: no trial starts that would not end within the search's part of it (expected: "
                        "the slowest trial so far), a trial still running then is cut at its last checkpoint and "
                        "labelled so (default: the space's sweep.time_budget, 10m for the default space, else none: "
                        "run every trial; on --resume the budget counts again from the resume)")
    p.add_argument("--final-share", type=float, metavar="F",
                   help="with a time budget: search on the first 1-F of it, then continue the best trial's best "
                        "checkpoint on every CPU for the rest, on a schedule planned for that time (default: the "
                        "space's sweep.final_share, 0.6 for the default space, else 0: no final phase)")
    p.add_argument("--no-search", action="store_true",
                   help="no search: train the space's default config (first model, middle of each range, first "
                        "choice) from scratch for the whole --time-budget, the run a search has to beat (default off)")
    p.add_argument("--warm-start", metavar="EXPERIMENT_DIR",
                   help="an earlier sweep of the same space (or one its configs fit): its trials seed the Optuna "
                        "study and its top configs run first; the configs that do not fit are named "
                        "(default: none, a cold start)")
    p.add_argument("--warm-start-top-k", type=int, default=DEFAULT_TOP_K, metavar="K",
                   help=f"how many of --warm-start's best configs run first (default {DEFAULT_TOP_K})")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler and of every trial (default 0)")


def add_parser(sub: argparse._SubParsersAction, after: After | None = None) -> None:
    """Register `mmtune search` with the `mmtune` CLI; `after` as in `run`."""
    p = sub.add_parser("search", help=HELP, description=HELP, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.error = _one_line_error(p)  # type: ignore[method-assign]
    add_arguments(p)
    p.set_defaults(func=functools.partial(run, after=after))


def args_from_namespace(ns: argparse.Namespace) -> SweepArgs:
    """The typed SweepArgs of parsed flags."""
    fields: dict[str, Any] = {k: getattr(ns, k) for k in SweepArgs.__dataclass_fields__ if hasattr(ns, k)}
    return SweepArgs(**fields)


def run(ns: argparse.Namespace, after: After | None = None) -> int:
    """Run the sweep; 0 when it completed, 3 when it was interrupted.

    `after(ns)` is called before the sweep starts (so that a bad --tracker is one line before any
    training) and returns what to do with the written experiment directory: the report and the
    trackers. The command above search hands it in (`mmtune.cli.report.after_sweep`), so that
    search does not import report.
    """
    from mmtune.search.sweep import run_sweep

    finish = after(ns) if after is not None else None
    result = run_sweep(args_from_namespace(ns))
    if finish is not None:
        finish(result.exp_dir)
    return 0 if result.status == "completed" else 3




def main(argv: list[str] | None = None, prog: str = "run_search.py",
         after: After | None = None) -> int:
    """`python run_search.py ...`: the same as `mmtune search ...`."""
    from mmtune.errors import MMTuneError

    parser = argparse.ArgumentParser(prog=prog, description=HELP, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.error = _one_line_error(parser)  # type: ignore[method-assign]
    add_arguments(parser)
    ns = parser.parse_args(argv)
    try:
        return run(ns, after)
    except MMTuneError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
