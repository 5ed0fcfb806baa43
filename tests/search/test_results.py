"""The results table and the best-per-model pick, on hand-made trial records (no Ray)."""

from __future__ import annotations

import math

from mmtune.experiment import (
    CUT_KEY,
    CheckpointRef,
    Outcome,
    TrialRecord,
    read_results,
    results_frame,
    trial_counts,
    trial_outcomes,
    write_results,
)
from mmtune.search.evaluate import best_per_model
from mmtune.search.spaces import parse_space
from mmtune.search.trial_log import DIVERGED_VAL_MSE

SPACE = parse_space({"model": {"choices": ["simple_lstm", "conv_tau"]},
                     "models": {"simple_lstm": {"preset": "small"}, "conv_tau": {"preset": "small"}}}, "t")


def _row(epoch: int, val: float, model: str, diverged: bool = False, **extra) -> dict:
    return {"epoch": epoch, "val_mse": val, "model": model, "diverged": diverged, "epochs_planned": 3,
            "training_iteration": epoch, "config/model": model, **extra}


def _trials() -> list[TrialRecord]:
    ok = TrialRecord("a", "TERMINATED", {"model": "conv_tau", "optuna_trial": 0},
                     [_row(1, 500.0, "conv_tau"), _row(2, 400.0, "conv_tau"), _row(3, 450.0, "conv_tau")], None,
                     "/x/a", [CheckpointRef("/x/a/ck1", {"epoch": 2, "val_mse": 400.0}),
                              CheckpointRef("/x/a/ck2", {"epoch": 3, "val_mse": 450.0})])
    stopped = TrialRecord("b", "TERMINATED", {"model": "conv_tau", "optuna_trial": 1},
                          [_row(1, 900.0, "conv_tau")], None, "/x/b")
    diverged = TrialRecord("c", "TERMINATED", {"model": "simple_lstm", "optuna_trial": 2},
                           [_row(1, 300.0, "simple_lstm"), _row(2, DIVERGED_VAL_MSE, "simple_lstm", diverged=True)],
                           None, "/x/c")
    retried = TrialRecord("d", "TERMINATED", {"model": "simple_lstm", "optuna_trial": 3},
                          [_row(1, 800.0, "simple_lstm"), _row(1, 700.0, "simple_lstm"),
                           _row(2, 650.0, "simple_lstm"), _row(3, 600.0, "simple_lstm")], None, "/x/d")
    failed = TrialRecord("e", "ERROR", {"model": "simple_lstm", "optuna_trial": 4}, [], "RuntimeError: boom", "/x/e")
    cut = TrialRecord("f", "TERMINATED", {"model": "simple_lstm", "optuna_trial": 5},
                      [_row(1, 750.0, "simple_lstm")], None, "/x/f", cut_by_budget=True)
    early = TrialRecord("g", "TERMINATED", {"model": "simple_lstm", "optuna_trial": 6}, [], None, "/x/g",
                        cut_by_budget=True)  # cut before its first epoch
    return [ok, stopped, diverged, retried, failed, cut, early]


def test_results_frame_marks_outcomes_and_keeps_the_truth() -> None:
    df = results_frame(_trials()).set_index(["trial_id", "epoch"])
    assert not df.index.duplicated().any()  # the retried epoch 1 of "d" is kept once (the last report)
    assert df.loc[("d", 1), "val_mse"] == 700.0
    assert df.loc[("b", 1), "stopped_early"] and not df.loc[("a", 3), "stopped_early"]
    assert df.loc[("c", 2), "diverged"] and math.isnan(df.loc[("c", 2), "val_mse"])
    assert df.loc[("c", 2), "objective"] == DIVERGED_VAL_MSE  # what Optuna and ASHA were told
    assert not df.loc[("c", 1), "stopped_early"]  # a diverged trial is not "stopped early"
    assert df.loc[("e", 0), "status"] == "ERROR" and "boom" in df.loc[("e", 0), "error"]
    assert df.loc[("a", 1), "optuna_trial"] == 0 and df.loc[("a", 1), "config/model"] == "conv_tau"
    assert df.loc[("f", 1), CUT_KEY] and not df.loc[("f", 1), "stopped_early"]  # the budget, not ASHA
    assert not df[CUT_KEY].drop(index=[("f", 1), ("g", 0)]).any() and df.loc[("g", 0), CUT_KEY]


def test_a_trial_cut_at_the_budget_is_counted_apart_from_asha_and_read_back(tmp_path) -> None:
    df = read_results(write_results(tmp_path, results_frame(_trials())).parent)
    outcomes = trial_outcomes(df)
    assert outcomes["f"] is Outcome.CUT_AT_BUDGET and outcomes["b"] is Outcome.STOPPED_EARLY
    assert outcomes["g"] is Outcome.CUT_AT_BUDGET and outcomes["a"] is Outcome.COMPLETED
    counts = trial_counts(df)
    assert counts["cut_by_budget"] == 2 and counts["stopped_early"] == 1
    older = read_results(write_results(tmp_path, df.drop(columns=[CUT_KEY])).parent)  # an earlier sweep's
    assert not older[CUT_KEY].any() and trial_outcomes(older)["f"] is Outcome.STOPPED_EARLY


def test_best_per_model_is_over_all_epochs_and_skips_diverged() -> None:
    best = best_per_model(_trials(), SPACE)
    trial, row = best["conv_tau"]
    assert trial.trial_id == "a" and row["epoch"] == 2  # not the last epoch's 450
    trial, row = best["simple_lstm"]
    assert trial.trial_id == "c" and row["epoch"] == 1  # its pre-divergence epoch is a real result
