"""A real 2-node Ray cluster on loopback: the smoke sweep runs its trials on both nodes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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


@pytest.mark.slow
def test_smoke_sweep_runs_on_both_nodes(tiny_space: Path, tmp_path: Path, ray_nodes) -> None:
    cluster = ray_nodes(ENV)
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
        proc = subprocess.run(
            [sys.executable, str(REPO / "run_search.py"), "--space", str(tiny_space), "--samples", "4",
             "--address", address, "--storage", str(tmp_path / "exp"), "--name", "cluster", "--no-report",
             "--verbose", "0"], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=ENV)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "multi-node sweep needs a path every node shares" in proc.stderr
        df = pd.read_parquet(tmp_path / "exp" / "cluster" / "results.parquet")
        assert df["trial_id"].nunique() == 4
        assert df["node_id"].nunique() == 2, df[["trial_id", "node_id"]].drop_duplicates()
    finally:
        for node in reversed(nodes):
            try:
                os.killpg(node.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for node in nodes:
            try:
                node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
