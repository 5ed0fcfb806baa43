"""--tracker mlflow / wandb: a real tiny sweep and real `mmtune train` runs, read back from the trackers' own stores.

No mocks: MLflow writes its SQLite store and artifacts, W&B its offline run files; the tests read them
back with MLflow's client and W&B's own reader of the offline file (what `wandb sync` uploads), and
compare what they hold with results.parquet, history.json and the other files mmtune wrote.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mmtune.experiment import (
    read_baselines,
    read_results,
    read_test_metrics,
    read_train_record,
    trial_outcomes,
)

REPO = Path(__file__).resolve().parents[2]
mlflow = pytest.importorskip("mlflow")
wandb = pytest.importorskip("wandb")

TINY = """
model: simple_lstm
shared:
  lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
  batch_size: 8
  epochs: 2
models:
  simple_lstm:
    preset: small
    hidden: {type: categorical, choices: [16, 32]}
data: {train_size: 16, val_size: 8, test_size: 8}
"""
TRAIN = ["train", "--model", "simple_lstm", "--preset", "small", "--epochs", "2", "--train-size", "16",
         "--val-size", "8", "--test-size", "8", "--batch-size", "8", "--device", "cpu", "--quiet"]


def _sweep(tmp: Path, name: str, *flags: str) -> tuple[Path, str]:
    """A 2-trial sweep of TINY through the CLI with `flags`; (its directory, its stderr)."""
    from mmtune.cli import main

    (tmp / "tiny.yaml").write_text(TINY)
    mp = pytest.MonkeyPatch()
    mp.delenv("WANDB_MODE", raising=False)
    mp.delenv("WANDB_DIR", raising=False)
    err = tmp / "stderr.txt"
    try:
        with open(err, "w") as f:
            mp.setattr(sys, "stderr", f)
            rc = main(["search", "--space", str(tmp / "tiny.yaml"), "--samples", "2", "--storage", str(tmp), "--name", name,
                       "--verbose", "0", *flags])
    finally:
        mp.undo()
    text = err.read_text()
    assert rc == 0, text[-3000:]
    return tmp / name, text


@pytest.fixture(scope="module")
def tracked_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 2-trial sweep with --tracker mlflow --tracker wandb (the driver logs every run after it)."""
    return _sweep(tmp_path_factory.mktemp("tracked"), "tracked", "--tracker", "mlflow", "--tracker", "wandb")


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _trial_params(g: pd.DataFrame) -> dict[str, object]:
    return {c.removeprefix("config/"): g[c].dropna().iloc[0] for c in g.columns
            if c.startswith("config/") and g[c].notna().any()}


@pytest.mark.xdist_group("ray")
def test_sweep_to_mlflow(tracked_sweep: tuple[Path, str]) -> None:
    exp, stderr = tracked_sweep
    uri = f"sqlite:///{exp / 'mlflow.db'}"
    assert f"mlflow ui --backend-store-uri {uri}" in stderr
    client = _client(uri)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("kind") != "sweep"]
    df = read_results(exp)
    outcomes = trial_outcomes(df)
    assert len(parents) == 1 and sorted(r.data.tags["trial_id"] for r in trials) == sorted(df["trial_id"].unique())
    parent = parents[0]
    for run in trials:
        tid = run.data.tags["trial_id"]
        g = df[df["trial_id"] == tid].sort_values("epoch")
        assert run.info.run_name == f"trial_{tid}"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["model"] == "simple_lstm" and run.data.tags["outcome"] == outcomes[tid].value
        assert run.data.tags["node"] == g["hostname"].iloc[0]
        params = _trial_params(g)
        assert set(run.data.params) == set(params) == {"lr", "simple_lstm.hidden"}
        assert float(run.data.params["lr"]) == params["lr"]
        assert int(run.data.params["simple_lstm.hidden"]) == params["simple_lstm.hidden"]
        for key in ("val_mse", "val_mse_pixel255", "train_loss", "val_ssim"):
            assert _history(client, run.info.run_id, key) == list(zip(g["epoch"], g[key], strict=True)), key
        for (_, frame), (_, pixel) in zip(_history(client, run.info.run_id, "val_mse"),
                                          _history(client, run.info.run_id, "val_mse_pixel255"), strict=True):
            assert math.isclose(pixel, frame * 65025 / 4096, rel_tol=1e-6)
        for key in ("train_samples_per_s", "infer_ms_per_clip"):
            assert [s for s, _ in _history(client, run.info.run_id, key)] == list(g["epoch"]), key
            assert all(v > 0 for _, v in _history(client, run.info.run_id, key))
        assert run.info.status == "FINISHED"
    # The parent: the sweep's files as artifacts, each family's test metrics and the baselines as metrics.
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert names >= {"sweep.json", "best_configs.json", "test_metrics.json", "baselines.json", "report.html",
                     "results.parquet", "space.yaml"}
    got = Path(client.download_artifacts(parent.info.run_id, "sweep.json", str(exp.parent / "download")))
    assert got.read_bytes() == (exp / "sweep.json").read_bytes()
    test = json.loads((exp / "test_metrics.json").read_text())["simple_lstm"]
    base = json.loads((exp / "baselines.json").read_text())["splits"]["test"]["metrics"]
    assert parent.data.metrics["simple_lstm/test_mse_frame"] == test["test"]["mse_frame"]
    assert parent.data.metrics["simple_lstm/test_mse_pixel255"] == test["test"]["mse_pixel255"]
    assert parent.data.metrics["baseline/test/last_frame/mse_frame"] == base["last_frame"]["mse_frame"]
    assert parent.data.tags["best/simple_lstm"] == test["trial_id"]
    assert parent.data.params["samples"] == "2" and parent.data.tags["status"] == "completed"
    _log_again_changes_nothing(client, experiment.experiment_id, exp, "mlflow", runs)


def _log_again_changes_nothing(client, experiment_id: str, exp: Path, flag: str, runs: list) -> None:
    """`mmtune report --tracker` on a folder logged before: the same runs, each epoch still there once."""
    from mmtune.cli import main

    before = {r.info.run_id: _history(client, r.info.run_id, "val_mse") for r in runs}
    assert main(["report", str(exp), "--out", str(exp.parent / "again.html"), "--tracker", flag]) == 0
    again = client.search_runs([experiment_id])
    assert {r.info.run_id: _history(client, r.info.run_id, "val_mse") for r in again} == before


@pytest.mark.xdist_group("ray")
def test_outcomes_reach_the_tags(tracked_sweep: tuple[Path, str], tmp_path: Path) -> None:
    """A copy of the sweep whose results say one trial failed and one was stopped after epoch 1, logged
    with `mmtune report --tracker`: each outcome is its run's tag, a failure also MLflow's status."""
    import shutil

    from mmtune.cli import main

    exp, _ = tracked_sweep
    copy = tmp_path / "tracked"
    shutil.copytree(exp, copy, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts", "wandb"))
    df = pd.read_parquet(copy / "results.parquet")
    failed, stopped = sorted(df["trial_id"].unique())
    df.loc[df["trial_id"] == failed, ["status", "error"]] = ["ERROR", "RuntimeError: boom"]
    df = df[~((df["trial_id"] == stopped) & (df["epoch"] == 2))]
    df.to_parquet(copy / "results.parquet", index=False)
    assert main(["report", str(copy), "--out", str(tmp_path / "r.html"), "--tracker", "mlflow"]) == 0
    client = _client(f"sqlite:///{copy / 'mlflow.db'}")
    runs = {r.data.tags.get("trial_id"): r for r in client.search_runs([client.get_experiment_by_name("tracked").experiment_id])}
    assert runs[failed].data.tags["outcome"] == "failed" and runs[failed].info.status == "FAILED"
    assert runs[failed].data.tags["error"] == "RuntimeError: boom"
    assert runs[stopped].data.tags["outcome"] == "stopped_early" and runs[stopped].info.status == "FINISHED"
    assert [s for s, _ in _history(client, runs[stopped].info.run_id, "val_mse")] == [1]


@pytest.mark.xdist_group("ray")
def test_trials_log_their_own_runs_live(tmp_path_factory: pytest.TempPathFactory) -> None:
    """--tracker-live: each trial logs its MLflow run from the Ray worker that trains it, epoch by epoch;
    the driver then adds the sweep's run and each trial's outcome, and logs no epoch twice.

    The store is a SQLite file (--tracker-live asks for live logging there): the path a tracking
    server takes (`tracking.is_shared`), since no MLflow server runs here (mlflow-skinny has none).
    """
    from mmtune.search.tracking import LIVE_TAG

    tmp = tmp_path_factory.mktemp("live")
    db = tmp / "shared" / "mlflow.db"
    exp, stderr = _sweep(tmp, "live", "--tracker", f"mlflow={db}", "--tracker-live", "--no-report")
    assert "(2 trial run(s) logged live by their nodes)" in stderr, stderr[-2000:]
    client = _client(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("live")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    trials = [r for r in runs if r is not parent]
    df = read_results(exp)
    outcomes = trial_outcomes(df)
    assert sorted(r.data.tags["trial_id"] for r in trials) == sorted(df["trial_id"].unique())
    written = (exp / "results.parquet").stat().st_mtime
    for run in trials:
        tid = run.data.tags["trial_id"]
        g = df[df["trial_id"] == tid].sort_values("epoch")
        tags = run.data.tags
        assert tags[LIVE_TAG] == "1" and run.info.start_time / 1000 < written  # begun by the trial, before the results
        assert tags["node"] == g["hostname"].iloc[0] and tags["node_ip"] == g["node_ip"].iloc[0]
        assert tags["mlflow.parentRunId"] == parent.info.run_id and tags["outcome"] == outcomes[tid].value
        assert tags["model"] == "simple_lstm" and run.info.status == "FINISHED"
        assert set(run.data.params) == {"lr", "simple_lstm.hidden"}
        assert float(run.data.params["lr"]) == g["config/lr"].iloc[0]
        for key in ("val_mse", "val_mse_pixel255", "train_samples_per_s"):  # each epoch exactly once
            assert _history(client, run.info.run_id, key) == list(zip(g["epoch"], g[key], strict=True)), key
        # Logged by the worker as the epoch ended (milliseconds), not filled in by the driver from
        # results.parquet's whole-second timestamps.
        assert any(m.timestamp % 1000 for m in client.get_metric_history(run.info.run_id, "val_mse"))
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"sweep.json", "test_metrics.json"}
    _log_again_changes_nothing(client, experiment.experiment_id, exp, f"mlflow={db}", runs)


def test_tracker_live_needs_mlflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmtune.cli import main

    args = ["search", "--space", str(REPO / "search_spaces/smoke.yaml"), "--storage", str(tmp_path / "s"), "--name", "never",
            "--tracker", "wandb", "--tracker-live"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--tracker-live logs MLflow runs" in err, err
    assert not (tmp_path / "s" / "never").exists()


@pytest.mark.parametrize(("uri", "shared"), [
    ("http://mlflow-host:5000", True), ("https://mlflow.example", True), ("databricks", True),
    ("databricks://profile", True), ("postgresql+psycopg2://u@db/mlflow", True),
    ("sqlite:////nfs/mlflow.db", False), ("file:///nfs/mlruns", False),
])
def test_which_stores_trials_log_to_live(uri: str, shared: bool) -> None:
    """Per-trial logging goes to stores many machines may write at once; a SQLite file or folder stays driver-side."""
    from mmtune.search.tracking import is_shared, mlflow_uri

    assert is_shared(mlflow_uri(uri, Path("/exp"))) is shared
    assert not is_shared(mlflow_uri(None, Path("/exp"))) and not is_shared(mlflow_uri("runs/mlflow.db", Path("/exp")))


def test_unreachable_tracking_server_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A tracking server nobody listens at: one line before Ray starts, nothing written."""
    from mmtune.cli import main

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own knob: no minutes of back-off
    with socket.socket() as s:  # a free port, closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["search", "--space", str(REPO / "search_spaces/smoke.yaml"), "--storage", str(tmp_path / "s"),
            "--name", "never", "--tracker", f"mlflow=http://127.0.0.1:{port}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"--tracker mlflow=http://127.0.0.1:{port}: the store at http://127.0.0.1:{port} cannot be used" in err
    assert not (tmp_path / "s" / "never").exists()


def _wandb_records(path: Path) -> list[bytes]:
    """The records of a .wandb transaction log: W&B's header, then LevelDB's log format (32 KiB blocks of
    chunks, each a 7-byte header: crc32c, little-endian length, type FULL=1 FIRST=2 MIDDLE=3 LAST=4)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    block, pos, out, buf = 32768, 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is zero padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            out.append(buf)
            buf = b""
        elif kind not in (2, 3):
            assert length == 0, (pos, kind)  # zero padding at the end of a block
    return out


def _read_offline_run(run_dir: Path) -> dict:
    """One offline W&B run, read from its run-ID.wandb file (what `wandb sync` uploads) with W&B's own protobuf schema."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("run-*.wandb")
    run: dict = {"dir": run_dir, "config": {}, "history": [], "summary": {}, "files": set(), "tags": []}

    def items(records) -> dict:
        return {r.key or "/".join(r.nested_key): json.loads(r.value_json) for r in records}

    for data in _wandb_records(path):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run.update(project=r.project, group=r.run_group, job_type=r.job_type, name=r.display_name,
                       tags=list(r.tags), id=r.run_id)
            run["config"].update(items(r.config.update))
        elif kind == "config":
            run["config"].update(items(rec.config.update))
        elif kind == "history":
            run["history"].append(items(rec.history.item))
        elif kind == "summary":
            run["summary"].update(items(rec.summary.update))
        elif kind == "files":
            run["files"] |= {f.path for f in rec.files.files}
        elif kind == "exit":
            run["exit_code"] = rec.exit.exit_code
    return run


def _wandb_runs(root: Path) -> list[dict]:
    """Every offline W&B run under root/wandb."""
    return [_read_offline_run(d) for d in sorted((root / "wandb").glob("offline-run-*"))]


@pytest.mark.xdist_group("ray")
def test_sweep_to_wandb_offline(tracked_sweep: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    exp, stderr = tracked_sweep
    assert f"wandb sync {exp / 'wandb'}/offline-run-*" in stderr
    runs = _wandb_runs(exp)
    _check_wandb(exp, runs)
    # Logged again (`mmtune report --tracker wandb`): the same run ids, each run's offline copy replaced,
    # so `wandb sync` sends one run per trial, not two.
    from mmtune.cli import main

    monkeypatch.delenv("WANDB_MODE", raising=False)
    for r in runs:  # a mark in each old copy: a new copy has none, even with the same name (same second)
        (r["dir"] / "old-copy").write_text("")
    assert main(["report", str(exp), "--out", str(exp.parent / "again.html"), "--tracker", "wandb"]) == 0
    again = _wandb_runs(exp)
    assert len({r["id"] for r in runs}) == len(runs) == len(again) and {r["id"] for r in again} == {r["id"] for r in runs}
    assert not [r["dir"] for r in again if (r["dir"] / "old-copy").exists()]
    _check_wandb(exp, again)


def _check_wandb(exp: Path, runs: list[dict]) -> None:
    """The offline runs of the sweep `exp` hold its trials, their outcomes and epochs, and its files."""
    df = read_results(exp)
    outcomes = trial_outcomes(df)
    assert {r["group"] for r in runs} == {"tracked"} and {r["project"] for r in runs} == {"mmtune"}
    parents = [r for r in runs if r["job_type"] == "sweep"]
    trials = {r["name"]: r for r in runs if r["job_type"] == "trial"}
    assert len(parents) == 1 and sorted(trials) == sorted(f"trial_{t}" for t in df["trial_id"].unique())
    for tid, g in df.groupby("trial_id"):
        run = trials[f"trial_{tid}"]
        g = g.sort_values("epoch")
        params = _trial_params(g)
        assert {k: run["config"][k] for k in params} == params
        tags = run["config"]["mmtune"]
        assert tags["outcome"] == outcomes[str(tid)].value and tags["node"] == g["hostname"].iloc[0]
        assert f"outcome:{outcomes[str(tid)].value}" in run["tags"] and "model:simple_lstm" in run["tags"]
        for key in ("val_mse", "val_mse_pixel255", "train_samples_per_s"):
            assert [(h["_step"], h[key]) for h in run["history"]] == list(zip(g["epoch"], g[key], strict=True)), key
    parent = parents[0]
    test = json.loads((exp / "test_metrics.json").read_text())["simple_lstm"]
    assert parent["summary"]["simple_lstm/test_mse_frame"] == test["test"]["mse_frame"]
    for name in ("sweep.json", "best_configs.json", "test_metrics.json", "report.html"):
        assert name in parent["files"]
        assert (parent["dir"] / "files" / name).read_bytes() == (exp / name).read_bytes()


def _train(tmp_path: Path, *tracker: str) -> Path:
    from mmtune.cli import main

    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), *tracker]) == 0
    return out


def test_train_to_mlflow(tmp_path: Path) -> None:
    out = _train(tmp_path, "--tracker", "mlflow")
    client = _client(f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("mmtune-train").experiment_id])
    record, tested = read_train_record(out), read_test_metrics(out)["simple_lstm"]
    history = json.loads((out / "history.json").read_text())
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.tags["model"] == "simple_lstm" and run.data.tags["outcome"] == "completed"
    assert run.data.tags["node"] == socket.gethostname()
    assert run.data.params["model"] == "simple_lstm" and float(run.data.params["train.lr"]) == record.config["train"]["lr"]
    assert run.data.params["data.train_size"] == "16" and run.data.params["model_cfg.hidden"]
    assert _history(client, run.info.run_id, "val_mse") == [(h["epoch"], h["val"]["mse_frame"]) for h in history]
    assert _history(client, run.info.run_id, "val_mse_pixel255") == [(h["epoch"], h["val"]["mse_pixel255"])
                                                                     for h in history]
    speeds = _history(client, run.info.run_id, "train_samples_per_s")
    assert [s for s, _ in speeds] == [1, 2] and all(v > 0 for _, v in speeds)
    assert tested.test is not None and run.data.metrics["test_mse_frame"] == tested.test["mse_frame"]
    base = read_baselines(out).splits["test"].metrics["mean_frame"]["mse_frame"]
    assert run.data.metrics["baseline/test/mean_frame/mse_frame"] == base
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "train.json", "test_metrics.json", "baselines.json", "history.json", "strip.png"}


def test_train_to_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = _train(tmp_path, "--tracker", "wandb=mmtune-test")
    (run,) = _wandb_runs(out)
    record, tested = read_train_record(out), read_test_metrics(out)["simple_lstm"]
    history = json.loads((out / "history.json").read_text())
    assert run["project"] == "mmtune-test" and run["group"] == "mmtune-train" and run["job_type"] == "train"
    assert run["config"]["model"] == "simple_lstm" and run["config"]["train.lr"] == record.config["train"]["lr"]
    assert run["config"]["mmtune"]["outcome"] == "completed"
    assert [(h["_step"], h["val_mse"]) for h in run["history"]] == [(h["epoch"], h["val"]["mse_frame"]) for h in history]
    assert tested.test is not None and run["summary"]["test_mse_frame"] == tested.test["mse_frame"]
    assert (run["dir"] / "files" / "history.json").read_bytes() == (out / "history.json").read_bytes()


BLOCK = "import sys; sys.modules[{name!r}] = None; from {module} import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize(("name", "module", "args"), [
    ("mlflow", "mmtune.cli", ["search", "--space", "search_spaces/smoke.yaml", "--name", "never"]),
    ("wandb", "mmtune.cli", [*TRAIN, "--out", "OUT"]),
])
def test_missing_tracker_is_one_line(tmp_path: Path, name: str, module: str, args: list[str]) -> None:
    """With the package's import blocked (as if not installed): one line naming the extra, exit 2, nothing written."""
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    if args[0] == "search":
        args += ["--storage", str(tmp_path / "storage")]
    proc = subprocess.run([sys.executable, "-c", BLOCK.format(name=name, module=module), *args, "--tracker", name],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"pip install 'mmtune[{name}]'" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("flags", "expected"), [
    (["--tracker", "comet"], "unknown tracker 'comet'; expected mlflow[=URI] or wandb[=PROJECT]"),
    (["--tracker", "mlflow="], "the URI after '=' is empty"),
    (["--tracker", "mlflow", "--tracker", "mlflow=x.db"], "--tracker mlflow is given twice"),
])
def test_bad_tracker_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str],
                                 expected: str) -> None:
    from mmtune.cli import main

    assert main([*TRAIN, "--out", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err, err
    assert list(tmp_path.iterdir()) == []
