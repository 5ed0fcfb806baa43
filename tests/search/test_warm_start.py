"""--warm-start, without Ray: which earlier configs fit a space, and what the seeded study holds."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest

from mmtune.errors import MMTuneError
from mmtune.search.spaces import load_space, parse_space
from mmtune.search.warm_start import WARM_ATTR, misfit, plan_warm_start, seed_study

SMOKE = "search_spaces/smoke.yaml"


def _write_results(tmp_path, trials):
    rows = []
    for tid, vals, params in trials:
        for e, v in enumerate(vals, 1):
            rows.append({"trial_id": tid, "epoch": e, "val_mse": v, **{f"config/{k}": p for k, p in params.items()}})
    pd.DataFrame(rows).to_parquet(tmp_path / "results.parquet")
    return tmp_path


def test_misfit_names_what_does_not_fit() -> None:
    space = load_space(SMOKE)
    ok = {"model": "conv_tau", "lr": 0.003, "conv_tau.N_T": 2, "conv_tau.kl_weight": 0.05}
    assert misfit(ok, space) is None
    assert "outside" in misfit({**ok, "conv_tau.N_T": 3}, space)
    assert "no parameter conv_tau.hid_T" in misfit({**ok, "conv_tau.hid_T": 64}, space)
    assert "no value for conv_tau.kl_weight" in misfit({k: v for k, v in ok.items() if k != "conv_tau.kl_weight"}, space)
    assert "model 'predrnn' is not in the space" in misfit({"model": "predrnn", "lr": 0.003}, space)
    assert "outside" in misfit({"model": "conv_lstm", "lr": 0.003, "conv_lstm.kernel_size": 7}, space)


def test_plan_keeps_the_fitting_best_first_and_names_the_rest(tmp_path) -> None:
    exp = _write_results(tmp_path, [
        ("a", [150.0, 120.0], {"model": "conv_tau", "lr": 0.003, "conv_tau.N_T": 2, "conv_tau.kl_weight": 0.05}),
        ("b", [110.0], {"model": "conv_lstm", "lr": 0.002, "conv_lstm.kernel_size": 5}),
        ("c", [100.0], {"model": "conv_lstm", "lr": 0.002, "conv_lstm.kernel_size": 7}),  # outside the space
        ("d", [math.nan], {"model": "simple_lstm", "lr": 0.002, "simple_lstm.hidden": 32}),  # diverged
        ("e", [130.0], {"model": "simple_lstm", "lr": 0.004, "simple_lstm.hidden": 64}),
    ])
    warm = plan_warm_start(exp, load_space(SMOKE), top_k=2)
    assert [t.trial_id for t in warm.known] == ["b", "a", "e"]
    assert [t.trial_id for t in warm.enqueued] == ["b", "a"]
    assert warm.known[1].val_mse == 120.0  # the best epoch, not the last
    assert [i for i, _ in warm.incompatible] == ["c"]
    assert warm.record()["incompatible"][0]["why"].startswith("conv_lstm.kernel_size=7")


def test_seeded_study_runs_the_top_k_first_and_knows_the_rest(tmp_path) -> None:
    exp = _write_results(tmp_path, [
        ("a", [120.0], {"model": "conv_tau", "lr": 0.003, "conv_tau.N_T": 2, "conv_tau.kl_weight": 0.05}),
        ("b", [110.0], {"model": "conv_lstm", "lr": 0.002, "conv_lstm.kernel_size": 5}),
        ("e", [130.0], {"model": "simple_lstm", "lr": 0.004, "simple_lstm.hidden": 64}),
    ])
    space = load_space(SMOKE)
    warm = plan_warm_start(exp, space, top_k=2)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seed_study(study, space, warm)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted(t.value for t in done) == [110.0, 120.0, 130.0]
    assert all(t.user_attrs[WARM_ATTR] == str(exp) for t in done)
    first, second = space.suggest(study.ask()), space.suggest(study.ask())
    assert first == {"model": "conv_lstm", "lr": 0.002, "conv_lstm.kernel_size": 5}
    assert second == {"model": "conv_tau", "lr": 0.003, "conv_tau.N_T": 2, "conv_tau.kl_weight": 0.05}


def test_one_model_space_and_refusals(tmp_path) -> None:
    raw = {"model": "conv_lstm", "shared": {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
           "models": {"conv_lstm": {"preset": "small", "kernel_size": {"type": "categorical", "choices": [3, 5]}}}}
    one = parse_space(raw, "one.yaml")
    exp = _write_results(tmp_path, [
        ("b", [110.0], {"model": "conv_lstm", "lr": 0.002, "conv_lstm.kernel_size": 5}),
        ("a", [120.0], {"model": "conv_tau", "lr": 0.003, "conv_tau.N_T": 2, "conv_tau.kl_weight": 0.05}),
    ])
    warm = plan_warm_start(exp, one)
    assert warm.known[0].params == {"lr": 0.002, "conv_lstm.kernel_size": 5}  # a one-model space samples no model
    study = optuna.create_study()
    seed_study(study, one, warm)
    assert len(study.trials) == 2  # one known, one enqueued
    (tmp_path / "x").mkdir()
    with pytest.raises(MMTuneError, match="none of its 1 configs fits"):
        plan_warm_start(_write_results(tmp_path / "x", [
            ("a", [120.0], {"model": "conv_tau", "lr": 0.003, "conv_tau.N_T": 2, "conv_tau.kl_weight": 0.05})]), one)
    with pytest.raises(MMTuneError, match="no results.parquet"):
        plan_warm_start(tmp_path / "nowhere", one)


def test_a_two_objective_study_learns_from_the_trials_that_recorded_their_flops(tmp_path) -> None:
    """--objective mse+flops: known trials go in with (val MSE, FLOPs); one without FLOPs only cannot."""
    exp = _write_results(tmp_path, [
        ("a", [120.0], {"model": "conv_tau", "lr": 0.003, "conv_tau.N_T": 2, "conv_tau.kl_weight": 0.05}),
        ("b", [110.0], {"model": "conv_lstm", "lr": 0.002, "conv_lstm.kernel_size": 5}),
    ])
    df = pd.read_parquet(exp / "results.parquet")
    df["flops_per_sample"] = [2.0e9 if t == "a" else math.nan for t in df["trial_id"]]
    df.to_parquet(exp / "results.parquet")
    space = load_space(SMOKE)
    warm = plan_warm_start(exp, space, top_k=2)
    study = optuna.create_study(directions=["minimize", "minimize"])
    assert seed_study(study, space, warm) == 1
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert [t.values for t in done] == [[120.0, 2.0e9]]
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 2  # both still run first
