"""Real sweeps on CPU (real Ray, real Optuna, tiny data) of issue 15: --time-budget, --warm-start and
--objective mse+flops."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest

from mmtune.experiment import CUT_KEY
from mmtune.search.plan import SweepArgs
from mmtune.search.sweep import run_sweep
from mmtune.search.warm_start import WARM_ATTR

pytestmark = pytest.mark.xdist_group("ray")  # make test's workers run the Ray sweeps one at a time


def _study(exp: Path) -> optuna.Study:
    return optuna.load_study(study_name=exp.name, storage=f"sqlite:///{exp / 'study.db'}")


def _only_simple_lstm(tiny_space: Path, model_line: str) -> str:
    """The tiny space without conv_tau (its `model:` line replaced by `model_line`)."""
    text = tiny_space.read_text().replace("model: {choices: [simple_lstm, conv_tau]}", model_line)
    return text.split("  conv_tau:")[0] + "data:" + text.split("data:")[1]


def _meta(exp: Path) -> dict:
    return json.loads((exp / "sweep.json").read_text())


def test_time_budget_stops_starting_trials_and_still_tests_the_best(tiny_space: Path, tmp_path: Path,
                                                                    capsys) -> None:
    """40 trials one at a time (each a few seconds) do not fit in 60 s: the sweep ends early, as planned,
    and tests what it has."""
    one = tmp_path / "one.yaml"  # one small model: the shortest trials
    one.write_text(_only_simple_lstm(tiny_space, "model: simple_lstm"))
    result = run_sweep(SweepArgs(space=str(one), samples=40, scheduler="fifo", max_concurrent=1,
                                 time_budget="1m", storage=str(tmp_path), name="budget", report=False, verbose=0))
    assert result.status == "completed"  # a budget that ended the sweep is not an interruption
    meta = _meta(result.exp_dir)
    b = meta["budget"]
    assert b["budget"] == "1m" and b["budget_s"] == 60.0 and b["ended_by_budget"] is True
    assert 1 <= meta["num_trials"] < 40 and b["trials_started"] == meta["num_trials"]
    assert meta["stopped_early"] == 0  # FIFO stops none early: a trial the hard limit ends is counted as cut
    df = pd.read_parquet(result.exp_dir / "results.parquet")
    epochs = df.groupby("trial_id")["epoch"].max()
    cut = set(df.loc[df[CUT_KEY], "trial_id"])
    assert b["cut"] == len(cut)
    first_report = df.groupby("trial_id")["timestamp"].min().sort_values()
    before_last = df[df["trial_id"].isin(first_report.index[:-1])].groupby("trial_id")["time_total_s"].max()
    # The budget covers the whole sweep: the search gets what is left after Ray's start, less a first
    # guess of the test split's and the report's time (15 s + a tenth of the budget).
    assert 20.0 < b["search_s"] <= 60.0 - 15.0 - 6.0
    # The soft limit started the last trial only when the slowest before it would have ended in time:
    assert b["last_start_s"] + b["last_expected_s"] <= b["search_s"] and b["last_expected_s"] >= before_last.max()
    if cut:  # a trial slower than every one before it (a busy machine) ran into the hard limit: the last one
        assert len(cut) == 1 and epochs[list(cut)[0]] < 3 and first_report.index[-1] in cut
    # Either the soft limit refused the next trial, or the hard one came while the last trial ran (or
    # was saving its last epoch): then it ended the sweep, and Ray's shutdown takes a few seconds more.
    assert b["refused"] >= 1 or b["used_s"] >= b["search_s"]
    assert b["used_s"] < b["search_s"] + 10.0
    assert b["sweep_s"] < 60.0 + 10.0  # the whole sweep, its test split included, within the budget (+ Ray's stop)
    assert (epochs.drop(index=list(cut)) == 3).all()  # Ray's hard stop cut no other trial short
    assert b["sweep_s"] >= b["used_s"]  # the test split came after
    test = json.loads((result.exp_dir / "test_metrics.json").read_text())
    assert test and all(math.isfinite(t["test"]["mse_frame"]) for t in test.values())
    assert "time budget 1m for the whole sweep" in capsys.readouterr().out


def test_a_trial_that_outlasts_the_budget_is_cut_labelled_so_and_still_tested(tiny_space: Path, tmp_path: Path,
                                                                               capsys) -> None:
    """The first trial always starts; at 1,000 epochs it cannot end in the search's part of 45 s (about
    20 s: the budget covers the test split and report too), so the hard limit cuts it."""
    long = tmp_path / "long.yaml"
    long.write_text(_only_simple_lstm(tiny_space, "model: simple_lstm").replace("epochs: 3", "epochs: 1000"))
    result = run_sweep(SweepArgs(space=str(long), samples=2, scheduler="fifo", max_concurrent=1,
                                 time_budget="45s", storage=str(tmp_path), name="cut", report=False, verbose=0))
    assert result.status == "completed"
    meta = _meta(result.exp_dir)
    b = meta["budget"]
    assert b["ended_by_budget"] is True and b["refused"] == 0 and b["cut"] == 1 == meta["cut_by_budget"]
    assert meta["num_trials"] == 1 and meta["stopped_early"] == 0  # cut, not "stopped early (ASHA)"
    df = pd.read_parquet(result.exp_dir / "results.parquet")
    assert df[CUT_KEY].all() and not df["stopped_early"].any() and 1 <= df["epoch"].max() < 1000
    trial = _study(result.exp_dir).trials[0]
    assert trial.user_attrs[CUT_KEY] is True and trial.user_attrs["stopped_early"] is False
    test = json.loads((result.exp_dir / "test_metrics.json").read_text())
    assert math.isfinite(test["simple_lstm"]["test"]["mse_frame"])  # its last finished epoch's checkpoint
    out = capsys.readouterr().out
    assert "1 cut at the time budget" in out and "1 trial(s) cut at the budget" in out


def test_warm_start_runs_the_earlier_top_k_first_and_seeds_the_study(tiny_space: Path, tmp_path: Path) -> None:
    cold = run_sweep(SweepArgs(space=str(tiny_space), samples=3, scheduler="fifo", seed=1, storage=str(tmp_path),
                               name="cold", report=False, verbose=0))
    df = pd.read_parquet(cold.exp_dir / "results.parquet")
    ranked = df.groupby("trial_id")["val_mse"].min().sort_values()
    warm = run_sweep(SweepArgs(space=str(tiny_space), samples=3, scheduler="fifo", seed=0, max_concurrent=1,
                               warm_start=str(cold.exp_dir), warm_start_top_k=2, storage=str(tmp_path),
                               name="warm", report=False, verbose=0))
    record = _meta(warm.exp_dir)["warm_start"]
    assert record["source"] == str(cold.exp_dir) and record["known"] == 3
    assert [e["trial_id"] for e in record["enqueued"]] == list(ranked.index[:2])
    study = _study(warm.exp_dir)
    trials = sorted(study.trials, key=lambda t: t.number)
    known = [t for t in trials if WARM_ATTR in t.user_attrs and "rerun_of" not in t.user_attrs]
    assert len(known) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in known)
    by_id = dict(ranked)
    assert sorted(t.value for t in known) == pytest.approx(sorted(by_id.values()))  # their best val MSE
    ran = [t for t in trials if t not in known]
    assert len(ran) == 3
    assert [t.user_attrs.get("rerun_of") for t in ran[:2]] == list(ranked.index[:2])  # run first, in order
    cold_params = {str(t.user_attrs["ray_trial_id"]): t.params for t in _study(cold.exp_dir).trials}
    for t in ran[:2]:
        assert t.params == cold_params[t.user_attrs["rerun_of"]]
    assert "rerun_of" not in ran[2].user_attrs  # the rest is sampled


def test_warm_start_names_the_configs_a_narrower_space_lacks(tiny_space: Path, tmp_path: Path, capsys) -> None:
    both = run_sweep(SweepArgs(space=str(tiny_space), samples=4, scheduler="fifo", storage=str(tmp_path),
                               name="both", report=False, verbose=0))
    models = pd.read_parquet(both.exp_dir / "results.parquet").groupby("trial_id")["model"].first()
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text(_only_simple_lstm(tiny_space, "model: {choices: [simple_lstm]}"))
    capsys.readouterr()
    warm = run_sweep(SweepArgs(space=str(narrow), samples=1, scheduler="fifo", max_concurrent=1,
                               warm_start=str(both.exp_dir), warm_start_top_k=1, storage=str(tmp_path),
                               name="narrow", report=False, verbose=0))
    err = capsys.readouterr().err
    record = _meta(warm.exp_dir)["warm_start"]
    left_out = {i["trial_id"] for i in record["incompatible"]}
    assert left_out == set(models[models == "conv_tau"].index)
    for tid in left_out:
        assert f"--warm-start: trial {tid} left out: model 'conv_tau' is not in the space" in err


def test_objective_mse_flops_is_a_two_objective_study(tiny_space: Path, tmp_path: Path) -> None:
    result = run_sweep(SweepArgs(space=str(tiny_space), samples=3, scheduler="fifo", objective="mse+flops",
                                 storage=str(tmp_path), name="pareto", report=False, verbose=0))
    assert result.status == "completed" and _meta(result.exp_dir)["objective"] == "mse+flops"
    study = _study(result.exp_dir)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    df = pd.read_parquet(result.exp_dir / "results.parquet")
    last = df.sort_values("epoch").groupby("optuna_trial").last()
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3
    for t in done:  # Optuna was told each trial's last val MSE and its FLOPs per training sample
        assert t.values == pytest.approx([last.loc[t.number, "val_mse"], last.loc[t.number, "flops_per_sample"]])
        assert t.values[1] > 0
    assert study.best_trials  # the Pareto front of the two
