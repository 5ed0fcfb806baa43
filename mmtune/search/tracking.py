"""MLflow runs logged live by the trials themselves, from the node that trains each one (`--tracker`).

By default the driver logs every trial after the sweep from results.parquet (`mmtune.report.trackers`).
When the MLflow store is one that every node reaches and many processes may write at once (a tracking
server `http(s)://...`, `databricks`, a database such as `postgresql://...`), or `--tracker-live` asks
for it, each trial instead logs its own run while it trains, from its Ray worker: its params, every
epoch's metrics (`EPOCH_METRICS`, the names of results.parquet) and the tags `model`, `node`,
`node_ip`, `node_id` (Ray's) and `trial_id`. After the sweep the driver logs the parent run and
completes each trial's run (its outcome, its status, its parent), logging only what a trial could not
(an infeasible trial, an epoch a failed logger missed); nothing is logged twice.

A SQLite file (`--tracker mlflow`'s default, or a path) stays driver-side unless `--tracker-live`:
SQLite takes one writer at a time, on one machine (on a network filesystem its locking is unreliable),
and MLflow's SQLite store is known to fail with "database is locked" under concurrent writers from
several workers.

Ray's `setup_mlflow` is not used: it starts the run through MLflow's fluent (process-global) API
with the whole config as params, and a trial that Ray restarts (FailureConfig, --resume) would get a
second run; here a restarted trial finds its run by its tags and goes on logging into it.

This module is the search side's: the report imports it, not the other way round.
"""

from __future__ import annotations

import math
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmtune._num import as_finite
from mmtune.errors import MMTuneError
from mmtune.experiment import COST_COLUMNS

MLFLOW_DB = "mlflow.db"  # the default store, inside the experiment (or train) folder
MLFLOW_ARTIFACTS = "mlartifacts"  # beside a SQLite store: the artifacts of its experiments
SOURCE_TAG = "mmtune.source"  # the folder a run belongs to: with its key, how a run is found again
LIVE_TAG = "mmtune.live"  # "1" on a trial run its worker logged while it trained
KIND_TAG = "mmtune.kind"  # sweep | train: what was logged
# results.parquet's per-epoch metrics, logged at step = epoch under the same names.
EPOCH_METRICS = ("val_mse", "val_mse_pixel255", "val_mae", "val_ssim", "val_psnr", "train_loss",
                 "train_seconds", "epoch_seconds", "train_samples", *COST_COLUMNS)
STEP_METRIC = "val_mse"  # a step is logged when this metric is there at it
OPTUNA_KEY = "optuna_trial"  # in a trial's config beside its sampled params (spaces.Suggest): not a param
# Stores many processes (and machines) may write at once: a trial logs its own run there, live.
_LOCAL_SCHEMES = ("sqlite", "file", "")


def mlflow_uri(value: str | None, home: Path) -> str:
    """The tracking URI of `--tracker mlflow[=VALUE]`: a URI as given, a path as its SQLite file, and
    by default `home`/mlflow.db."""
    if value is None:
        return f"sqlite:///{(home / MLFLOW_DB).resolve()}"
    if "://" in value or value.startswith("databricks"):
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def is_shared(uri: str) -> bool:
    """Whether many processes on many machines may write the MLflow store `uri` at once: a tracking
    server, databricks or a database; not a SQLite file or a local folder."""
    scheme = uri.partition(":")[0].lower() if ("://" in uri or uri.startswith("databricks")) else ""
    return scheme.split("+")[0] not in _LOCAL_SCHEMES


@dataclass(frozen=True)
class LiveMLflow:
    """Where a trial logs its run live (picklable, in `RunSpec`): the store, the experiment's id, the
    experiment directory as the driver names it (`SOURCE_TAG`)."""

    uri: str
    experiment_id: str
    source: str


def live_mlflow(flags: Iterable[str], exp_dir: Path, name: str, force: bool = False) -> LiveMLflow | None:
    """The sweep's live MLflow logging, its experiment created now (by the driver, before any trial):
    None unless a `--tracker mlflow[=URI]` flag names a shared store (`is_shared`) or `force`.

    Raises:
        MMTuneError: the store refused (e.g. no server at the URI), or `force` without an mlflow tracker:
            one line, before anything is trained.
    """
    values = [f.partition("=") for f in flags]
    found = [(v.strip() if eq else None) for n, eq, v in values if n.strip().lower() == "mlflow"]
    if not found:
        if force:
            raise MMTuneError("--tracker-live logs MLflow runs from the trials; give --tracker mlflow[=URI] too")
        return None
    uri = mlflow_uri(found[0], exp_dir)
    if not (force or is_shared(uri)):
        return None
    try:
        if uri.startswith("sqlite:///"):  # the default store goes inside the experiment directory, not yet made
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        client = mlflow_client(uri)
        return LiveMLflow(uri, experiment_id(client, uri, name), str(exp_dir.resolve()))
    except Exception as exc:  # MLflow raises its own and requests' errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise MMTuneError(f"--tracker mlflow={found[0] or ''}: the store at {uri} cannot be used "
                          f"({type(exc).__name__}: {first[:300]})") from None


def mlflow_client(uri: str) -> Any:
    """MLflow's client of `uri`, its INFO lines silenced."""
    import logging

    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its "Creating initial MLflow database tables"
    return MlflowClient(tracking_uri=uri)


def experiment_id(client: Any, uri: str, name: str) -> str:
    """The id of the MLflow experiment `name`, created when missing (a SQLite store's artifacts beside it)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    if uri.startswith("sqlite:///"):  # else MLflow puts the artifacts under the working directory
        location = (Path(uri.removeprefix("sqlite:///")).parent / MLFLOW_ARTIFACTS / name).as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def finite(d: dict[str, Any]) -> dict[str, float]:
    """The entries that are finite numbers, as floats (lists, strings, None and NaN left out)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, (bool, str, list, tuple, dict)) or v is None:
            continue
        f = as_finite(v)
        if not math.isnan(f):
            out[k] = f
    return out


def find_runs(client: Any, experiment: str, source: str) -> list[Any]:
    """The active runs of `experiment` logged from `source` (oldest first)."""
    out, token = [], None
    while True:
        where = f"tags.`{SOURCE_TAG}` = '{source}'" if "'" not in source else ""
        page = client.search_runs([experiment], filter_string=where, max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        out += [r for r in page if r.data.tags.get(SOURCE_TAG) == source]
        token = page.token
        if not token:
            return out


def logged_steps(client: Any, run_id: str) -> set[int]:
    """The steps a run already holds (those of `STEP_METRIC`)."""
    return {int(m.step) for m in client.get_metric_history(run_id, STEP_METRIC)}


class TrialRun:
    """One trial's MLflow run, written by the worker that trains it, epoch by epoch.

    A tracker that fails (a server gone) must not fail the trial: it says so once on stderr and logs
    nothing more; the driver logs what is missing after the sweep.

    Args:
        live: where (`live_mlflow`).
        trial_id: Ray's trial id (the run's `trial_id` tag, with `SOURCE_TAG` its identity).
        params: the trial's sampled config.
        model: its model (the `model` tag).
        node: where it runs (node_ip, hostname), as the adapter learned it; the driver adds the outcome
            and the rest of the tags when the sweep ends.
    """

    def __init__(self, live: LiveMLflow, trial_id: str, params: dict[str, Any], model: str,
                 node: dict[str, Any]) -> None:
        from mlflow.entities import Param

        tags = {"model": model, "node": str(node.get("hostname") or node.get("node_ip") or "unknown"),
                "node_ip": str(node.get("node_ip") or ""), "node_id": str(node.get("node_id") or ""),
                "phase": "search"}
        params = dict(params)
        if (number := params.pop(OPTUNA_KEY, None)) is not None:  # a tag, as results.parquet keeps it apart
            tags[OPTUNA_KEY] = str(int(number))

        self.live, self.trial_id, self.run_id = live, trial_id, ""
        self.client: Any = None
        self.steps: set[int] = set()
        try:
            self.client = mlflow_client(live.uri)
            old = [r for r in find_runs(self.client, live.experiment_id, live.source)
                   if r.data.tags.get("trial_id") == trial_id]
            if old:  # Ray restarted the trial (a failure, --resume): its run goes on
                self.run_id = old[0].info.run_id
                self.steps = logged_steps(self.client, self.run_id)
                self.client.update_run(self.run_id, status="RUNNING")
                return
            run = self.client.create_run(live.experiment_id, run_name=f"trial_{trial_id}", start_time=_now_ms(),
                                         tags={**tags, "trial_id": trial_id, SOURCE_TAG: live.source,
                                               LIVE_TAG: "1", KIND_TAG: "sweep"})
            self.run_id = run.info.run_id
            batch = [Param(k, str(v)[:500]) for k, v in flat(params).items() if v is not None]
            for i in range(0, len(batch), 100):  # MLflow takes 100 params a batch
                self.client.log_batch(self.run_id, params=batch[i:i + 100])
        except Exception as exc:
            self._give_up(exc)

    def log(self, row: dict[str, Any]) -> None:
        """One epoch's row (`TrialLog.row`), at step = its epoch; an epoch the run holds already is not logged again."""
        from mlflow.entities import Metric

        step = int(row.get("epoch", 0))
        if self.client is None or step <= 0 or step in self.steps:
            return
        now = _now_ms()
        try:
            metrics = [Metric(k, v, now, step) for k, v in finite({k: row.get(k) for k in EPOCH_METRICS}).items()]
            self.client.log_batch(self.run_id, metrics=metrics)
            self.steps.add(step)
        except Exception as exc:
            self._give_up(exc)

    def close(self, diverged: bool) -> None:
        """The trial's last epoch has run: FINISHED (FAILED if it diverged). A trial stopped early never
        gets here; the driver closes its run."""
        if self.client is None:
            return
        try:
            self.client.set_terminated(self.run_id, "FAILED" if diverged else "FINISHED", end_time=_now_ms())
        except Exception as exc:
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        self.client = None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"mmtune: warning: trial {self.trial_id} on {socket.gethostname()} stops logging to MLflow at "
              f"{self.live.uri} ({type(exc).__name__}: {first[:300]}); the driver logs it after the sweep",
              file=sys.stderr, flush=True)


def flat(d: dict[str, Any], sep: str = "/", prefix: str = "") -> dict[str, Any]:
    """Nested keys joined by `sep`: "/" as results.parquet's `config/` columns name them
    ({"a": {"b": 1}} -> {"a/b": 1}), "." for the driver's params ({"train.lr": 0.1})."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, sep, f"{prefix}{k}{sep}"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _now_ms() -> int:
    return int(time.time() * 1000)
