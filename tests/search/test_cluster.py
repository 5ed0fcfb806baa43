"""A real 2-node Ray cluster on loopback: the smoke sweep runs its trials on both nodes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.xdist_group("ray")  # make test's workers run the Ray sweeps one at a time

REPO = Path(__file__).resolve().parents[2]
# One machine, loopback only: no token to hand between the nodes and the driver.
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def _wait_for_nodes(address: str, n: int, timeout: float = 120) -> None:
    code = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "print(sum(1 for x in ray.nodes() if x['Alive']))")
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, timeout=60,
                             env=ENV)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(2)
    raise AssertionError(f"the cluster at {address} did not reach {n} nodes")


@contextlib.contextmanager
def _two_nodes(cluster, tmp_path: Path) -> Iterator[str]:
    """A head and a worker node on loopback (1 CPU each); yields the head's address, stops both."""
    port = cluster.free_port()
    address = f"127.0.0.1:{port}"
    nodes: list[subprocess.Popen] = []
    try:
        nodes.append(cluster.start(["--head", f"--port={port}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                                  "--include-dashboard=false", '--resources={"node_a": 1}'], tmp_path / "head.log"))
        time.sleep(5)
        nodes.append(cluster.start([f"--address={address}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                                  '--resources={"node_b": 1}'], tmp_path / "worker.log"))
        _wait_for_nodes(address, 2)
        yield address
    finally:
        _stop(nodes)


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process group (last started first), SIGKILL what is left after 20 s."""
    for proc in reversed(procs):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _sweep(tiny_space: Path, tmp_path: Path, address: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "run_search.py"), "--space", str(tiny_space), "--samples", "4",
         "--address", address, "--storage", str(tmp_path / "exp"), "--name", "cluster", "--no-report",
         "--verbose", "0", *extra], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=ENV)


@pytest.mark.slow
def test_smoke_sweep_runs_on_both_nodes(tiny_space: Path, tmp_path: Path, ray_nodes) -> None:
    with _two_nodes(ray_nodes(ENV), tmp_path) as address:
        proc = _sweep(tiny_space, tmp_path, address)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "multi-node sweep needs a path every node shares" in proc.stderr
    df = pd.read_parquet(tmp_path / "exp" / "cluster" / "results.parquet")
    assert df["trial_id"].nunique() == 4
    assert df["node_id"].nunique() == 2, df[["trial_id", "node_id"]].drop_duplicates()


# A real MLflow tracking server: the full `mlflow` package, which `make test` installs in its own venv.
MLFLOW_SERVER = REPO / ".venv" / "mlflow-server" / "bin" / "mlflow"


@contextlib.contextmanager
def _mlflow_server(tmp_path: Path, port: int) -> Iterator[str]:
    """`mlflow server` on loopback with a SQLite store and served artifacts; yields its URI."""
    uri = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(MLFLOW_SERVER), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=open(tmp_path / "mlflow-server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError((tmp_path / "mlflow-server.log").read_text()[-3000:])
            time.sleep(1)
        yield uri
    finally:
        _stop([proc])


@pytest.mark.slow
@pytest.mark.skipif(not MLFLOW_SERVER.exists(), reason=f"no MLflow server at {MLFLOW_SERVER}: `make test` installs it")
def test_each_node_logs_its_trials_live_to_a_real_mlflow_server(tiny_space: Path, tmp_path: Path, ray_nodes) -> None:
    """Issue 28 on a cluster: a 2-node sweep with --tracker mlflow=http://...; every trial's run was
    created by the worker that trained it (mmtune.live=1, its Ray node id), on both nodes, with every
    epoch's val MSE; the driver then added the outcomes and the parent run with the sweep's files."""
    from mlflow.tracking import MlflowClient

    cluster = ray_nodes(ENV)
    with _mlflow_server(tmp_path, cluster.free_port()) as uri, _two_nodes(cluster, tmp_path) as address:
        proc = _sweep(tiny_space, tmp_path, address, "--tracker", f"mlflow={uri}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("cluster")
        runs = client.search_runs([exp.experiment_id], max_results=100)
        trials = {r.data.tags["trial_id"]: r for r in runs if "trial_id" in r.data.tags}
        parent = [r for r in runs if r.data.tags.get("kind") == "sweep"]
        histories = {t: [m.step for m in client.get_metric_history(r.info.run_id, "val_mse")] for t, r in trials.items()}
        artifacts = {a.path for a in client.list_artifacts(parent[0].info.run_id)} if parent else set()
    df = pd.read_parquet(tmp_path / "exp" / "cluster" / "results.parquet")
    assert set(trials) == set(df["trial_id"]) and len(trials) == 4
    assert all(r.data.tags.get("mmtune.live") == "1" for r in trials.values()), "a trial run was not logged live"
    node_of = df.groupby("trial_id")["node_id"].first()
    assert {t: r.data.tags["node_id"] for t, r in trials.items()} == node_of.to_dict()
    assert len(set(node_of)) == 2  # both nodes trained, and each logged its own trials
    for t, g in df[df["epoch"] > 0].groupby("trial_id"):
        assert sorted(histories[t]) == sorted(g["epoch"].astype(int)), t
    assert all(r.data.tags.get("outcome") and r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id
               for r in trials.values())
    assert {"sweep.json", "results.parquet", "test_metrics.json"} <= artifacts, artifacts
