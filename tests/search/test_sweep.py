"""Real sweeps on CPU (real Ray, real Optuna, tiny data): ASHA, results files, interrupt and resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from mmtune.search import owner
from mmtune.search.plan import SweepArgs
from mmtune.search.sweep import run_sweep

pytestmark = pytest.mark.xdist_group("ray")  # make test's workers run the Ray sweeps one at a time

REPO = Path(__file__).resolve().parents[2]


def _result_lines(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _check_experiment(exp: Path, samples: int) -> pd.DataFrame:
    """What every finished sweep must leave, and how its files agree with each other."""
    df = pd.read_parquet(exp / "results.parquet")
    assert df["trial_id"].nunique() == samples
    assert not df.duplicated(["trial_id", "epoch"]).any()
    for trial_id, g in df.groupby("trial_id"):
        reported = {r["epoch"] for r in _result_lines(exp / f"trial_{trial_id}")}
        assert set(g["epoch"]) == reported, trial_id  # every reported epoch, once
    for col in ("val_mse", "val_mse_pixel255", "val_mae", "val_ssim", "val_psnr", "train_loss", "status",
                "stopped_early", "diverged", "error", "node_ip", "hostname", "time_this_iter_s",
                "train_seconds", "config/lr", "config/model"):
        assert col in df, col
    best = json.loads((exp / "best_configs.json").read_text())
    test = json.loads((exp / "test_metrics.json").read_text())
    assert set(best) == set(test) == set(df["model"])
    base = json.loads((exp / "baselines.json").read_text())
    test_base = base["splits"]["test"]["metrics"]
    assert set(base["splits"]) == {"val", "test"} and set(test_base) >= {"blank", "mean_frame", "last_frame"}
    best_base = min(v["mse_frame"] for v in test_base.values())
    for model, entry in best.items():
        rows = df[(df["model"] == model) & ~df["diverged"]]
        assert math.isclose(entry["val_mse"], rows["val_mse"].min(), rel_tol=1e-9)
        assert entry["checkpoint_epoch"] == entry["best_epoch"]  # the best checkpoint was kept
        assert entry["config"]["model"] == model
        t = test[model]
        assert t["trial_id"] == entry["trial_id"] and t["epoch"] == entry["best_epoch"]
        for key in ("mse_frame", "mse_pixel255", "mae_frame", "ssim", "psnr"):
            assert np.isfinite(t["test"][key])
            assert len(t["test"][f"{key}_per_step"]) == 10
        vs = t["vs_best_baseline"]
        assert math.isclose(vs["ratio"], t["test"]["mse_frame"] / best_base) and vs["beats"] == (vs["ratio"] < 1)
        with np.load(exp / "predictions" / f"{model}.npz") as z:
            assert z["inputs"].shape == z["truth"].shape == z["pred"].shape == (4, 10, 64, 64)
    study = optuna.load_study(study_name=exp.name, storage=f"sqlite:///{exp / 'study.db'}")
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == samples
    last_epoch = df.groupby("optuna_trial")["epoch"].max()
    for t in finished:
        assert t.user_attrs["value_epoch"] == last_epoch[t.number]  # the budget the value was reached at
    meta = json.loads((exp / "sweep.json").read_text())
    assert meta["status"] == "completed" and meta["num_trials"] == samples
    assert meta["hardware"]["versions"]["ray"] and meta["wall_seconds"] > 0
    assert list(exp.glob("trial_*/tensorboard/events.out.tfevents.*"))
    for trial_dir in exp.glob("trial_*"):
        assert len(list(trial_dir.glob("checkpoint_*"))) <= 2
    return df


def test_asha_sweep_stops_early_and_writes_everything(tiny_space: Path, tmp_path: Path, capsys) -> None:
    result = run_sweep(SweepArgs(space=str(tiny_space), samples=6, storage=str(tmp_path), name="asha",
                                 seed=0, report=False, verbose=0))
    assert result.status == "completed"
    out = capsys.readouterr().out
    assert out.count("x the best baseline") == 2 and "baselines on the 8 test clips (no training)" in out
    df = _check_experiment(result.exp_dir, 6)
    per_trial = df.groupby("trial_id").agg(stopped=("stopped_early", "any"), epochs=("epoch", "max"))
    assert per_trial["stopped"].sum() >= 1
    assert (per_trial[per_trial["stopped"]]["epochs"] < 3).all()
    assert (per_trial[~per_trial["stopped"]]["epochs"] == 3).all()
    meta = json.loads((result.exp_dir / "sweep.json").read_text())
    assert meta["stopped_early"] == per_trial["stopped"].sum()
    assert meta["trial_epochs"] == len(df)


def test_model_weights_and_a_protocol(tiny_space: Path, tmp_path: Path, monkeypatch) -> None:
    """model.weights fix each trial's family through Optuna's queue; --protocol sets data and epochs."""
    from mmtune.training import protocols

    tiny = protocols.Protocol("tiny", "a test budget", data={"train_size": 24, "val_size": 8, "test_size": 8},
                              train={"epochs": 1, "batch_size": 8})
    monkeypatch.setitem(protocols.PROTOCOLS, "tiny", tiny)
    text = tiny_space.read_text().replace("model: {choices: [simple_lstm, conv_tau]}",
                                          "model: {choices: [simple_lstm, conv_tau], weights: [1, 2]}")
    weighted = tmp_path / "weighted.yaml"
    weighted.write_text(text)
    result = run_sweep(SweepArgs(space=str(weighted), samples=3, scheduler="fifo", protocol="tiny",
                                 max_concurrent=1, storage=str(tmp_path), name="weighted", report=False, verbose=0))
    meta = json.loads((result.exp_dir / "sweep.json").read_text())
    assert meta["protocol"]["name"] == "tiny" and "held-out" in meta["protocol"]["test_clips"]
    best = json.loads((result.exp_dir / "best_configs.json").read_text())
    for entry in best.values():  # the space says 3 epochs, batch 16 and 16/8/8 clips; the protocol wins
        assert entry["config"]["train"]["epochs"] == 1 and entry["config"]["train"]["batch_size"] == 8
        assert entry["config"]["data"]["train_size"] == 24
    study = optuna.load_study(study_name="weighted", storage=f"sqlite:///{result.exp_dir / 'study.db'}")
    models = [t.params["model"] for t in sorted(study.trials, key=lambda t: t.number)]
    assert models == ["conv_tau", "simple_lstm", "conv_tau"]  # the plan, in order
    lrs = {t.params["lr"] for t in study.trials}
    assert len(lrs) == 3  # everything but the model is still sampled
    df = pd.read_parquet(result.exp_dir / "results.parquet")
    assert df.groupby("model")["trial_id"].nunique().to_dict() == {"conv_tau": 2, "simple_lstm": 1}


def test_killed_sweep_resumes_without_rerunning_completed_trials(tiny_space: Path, tmp_path: Path) -> None:
    samples = 5
    cmd = [sys.executable, str(REPO / "run_search.py"), "--space", str(tiny_space), "--samples", str(samples),
           "--scheduler", "fifo", "--max-concurrent", "1", "--storage", str(tmp_path), "--name", "killed",
           "--no-report", "--verbose", "0"]
    exp = tmp_path / "killed"
    log = open(tmp_path / "driver.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    done: dict[str, list] = {}  # trial folder -> its reported (epoch, timestamp) rows when it had finished
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(done) < 2:
            time.sleep(0.5)
            for d in exp.glob("trial_*"):
                rows = _result_lines(d)
                if rows and rows[-1]["epoch"] == 3 and d.name not in done:
                    done[d.name] = [(r["epoch"], r["timestamp"]) for r in rows]
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        assert len(done) >= 2, "the driver did not finish two trials in time"
        time.sleep(5)  # Ray saves its experiment state every 2 s (TUNE_GLOBAL_CHECKPOINT_S)
        proc.send_signal(signal.SIGKILL)  # a real crash of the driver: no clean-up of any kind
        proc.wait(timeout=30)
        t_kill = time.time()
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the local Ray this driver started, if it outlived it
        except ProcessLookupError:
            pass
    # Workers the crash orphaned stop at their next epoch end, writing nothing more (owner.py).
    wait_end = time.time() + 120
    while owner.holders(exp) and time.time() < wait_end:
        time.sleep(0.5)
    assert not owner.holders(exp), owner.holders(exp)
    late = [p for p in exp.rglob("*") if p.is_file() and p.stat().st_mtime > t_kill + 0.5
            and owner.WRITERS_DIR not in p.parts]
    assert late == [], f"written after the driver was killed: {late}"
    meta = json.loads((exp / "sweep.json").read_text())
    assert meta["status"] == "running"  # the crash left it unfinished
    study_db = f"sqlite:///{exp / 'study.db'}"
    at_crash = optuna.load_study(study_name="killed", storage=study_db).trials
    finished_at_crash = {t.number: t.value for t in at_crash if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(finished_at_crash) >= 2  # the two trials the test saw finish
    _check_corrupt_checkpoint_refused(exp, tmp_path)
    resumed = subprocess.run([sys.executable, str(REPO / "run_search.py"), "--resume", "--name", "killed",
                              "--storage", str(tmp_path), "--no-report", "--verbose", "0"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name, rows in done.items():  # a re-run would have new timestamps, a resume extra rows
        assert [(r["epoch"], r["timestamp"]) for r in _result_lines(exp / name)] == rows, f"{name} was re-run"
    df = _check_experiment(exp, samples)
    assert (df.groupby("trial_id")["epoch"].max() == 3).all()  # FIFO: every trial ran to the end
    meta = json.loads((exp / "sweep.json").read_text())
    assert len(meta["runs"]) == 2 and meta["runs"][-1]["resume"] is True
    # The Optuna study carried on: the trials it had stay as they were, it grew to one finished
    # trial per Ray trial, none twice, none left hanging.
    after = optuna.load_study(study_name="killed", storage=study_db).trials
    assert len(after) >= len(at_crash)
    assert {t.number: t.value for t in after if t.number in finished_at_crash} == finished_at_crash
    complete = [t for t in after if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == samples, [(t.number, t.state) for t in after]
    # An Optuna trial asked for just before the crash, whose Ray trial was never saved, is failed
    # on resume (not left RUNNING forever); Ray asked for a new one in its place.
    lost = [t for t in after if t.state != optuna.trial.TrialState.COMPLETE]
    assert all(t.state == optuna.trial.TrialState.FAIL and "lost" in t.user_attrs for t in lost), lost
    ray_ids = [t.user_attrs.get("ray_trial_id") for t in complete]
    assert len(set(ray_ids)) == samples and set(ray_ids) == set(df["trial_id"])
    assert sorted(df.groupby("trial_id")["optuna_trial"].first()) == sorted(t.number for t in complete)


def _check_corrupt_checkpoint_refused(exp: Path, tmp_path: Path) -> None:
    """--resume of a real crashed experiment with one flipped checkpoint byte: one line, exit 2,
    and not a file of the experiment changed; then the byte goes back."""
    state = sorted(exp.glob("trial_*/checkpoint_*/state.pt"))[0]
    good = state.read_bytes()
    # Ray worker processes of the killed driver can still flush files for a moment: wait until the
    # directory is quiet, so that a change seen below is the failed --resume's and nobody else's.
    before = _mtimes(exp, state)
    for _ in range(30):
        time.sleep(2)
        now = _mtimes(exp, state)
        if now == before:
            break
        before = now
    state.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    proc = subprocess.run([sys.executable, str(REPO / "run_search.py"), "--resume", "--name", "killed",
                           "--storage", str(tmp_path), "--no-report", "--verbose", "0"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and f"checkpoint {state} is corrupt" in lines[0], proc.stderr
    assert _mtimes(exp, state) == before
    state.write_bytes(good)


def _mtimes(exp: Path, skip: Path) -> dict[Path, int]:
    """mtime of every file under `exp` but `skip`."""
    return {p: p.stat().st_mtime_ns for p in exp.rglob("*") if p.is_file() and p != skip}
