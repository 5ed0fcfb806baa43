"""--resume after a crash that left Ray's saved trials, the saved searcher and the Optuna study apart.

Ray writes its trials, then the searcher, then copies both to storage; the driver asks Optuna for a
trial (SQLite) before either. The CI once caught a resume whose restored searcher did not know one
of Ray's trials: that trial ran, and Optuna never heard of it (4 finished Optuna trials for 5 Ray
trials). These tests build each such state directly, without timing a kill.
"""

from __future__ import annotations

import optuna
import pytest

from mmtune.search.searcher import BudgetLimiter, RecordingOptunaSearch, Restoring

SPACE = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}


def _searcher(db: str) -> RecordingOptunaSearch:
    return RecordingOptunaSearch(space=SPACE, metric="val_mse", mode="min", storage=optuna.storages.RDBStorage(db), study_name="s",
                                 sampler=optuna.samplers.RandomSampler(seed=0))


def _result(value: float, epoch: int) -> dict:
    return {"val_mse": value, "epoch": epoch, "epochs_planned": epoch, "training_iteration": epoch}


@pytest.fixture
def crashed(tmp_path):
    """A driver that asked for a (#0) and c (#1), saved its searcher, asked for b (#2) and d (#3),
    then died. Ray had saved a and b: c is known only to the searcher, b only to Ray, d to neither."""
    db = f"sqlite:///{tmp_path / 'study.db'}"
    limiter = BudgetLimiter(_searcher(db), max_concurrent=2, budget_s=None)
    for trial_id in ("a", "c"):
        assert limiter.suggest(trial_id) is not None
    saved = tmp_path / "searcher-state.pkl"
    limiter.searcher.save(str(saved))
    state = limiter.get_state()
    limiter.live_trials.clear()  # room to ask for two more
    for trial_id in ("b", "d"):
        assert limiter.suggest(trial_id) is not None
    restored = BudgetLimiter(_searcher(db), max_concurrent=2, budget_s=None)  # as Ray unpickles it
    with Restoring.these({"a": 0, "b": 2}):  # as run() reads Ray's restored trials
        restored.set_state(state)  # Ray's SearchGenerator.restore_from_dir: wrappers, then the searcher
        restored.searcher.restore(str(saved))
        yield restored, optuna.load_study(study_name="s", storage=db)


def test_each_ray_trial_reaches_its_optuna_trial_and_the_lost_ones_fail(crashed) -> None:
    limiter, study = crashed
    with Restoring.these({"a": 0, "b": 2}):
        assert limiter.live_trials == {"a"}  # c, which Ray lost, holds no slot
        for trial_id, value in (("b", 3.0), ("a", 4.0)):
            limiter.on_trial_result(trial_id, _result(value, 1))
            limiter.on_trial_complete(trial_id, _result(value, 1))
        assert limiter.suggest("e") is not None  # Ray's new trial in place of the lost ones
    trials = {t.number: t for t in study.trials}
    assert [trials[n].state for n in range(5)] == [
        optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING]
    assert (trials[0].value, trials[2].value) == (4.0, 3.0)
    assert trials[2].user_attrs["ray_trial_id"] == "b" and trials[2].user_attrs["value_epoch"] == 1
    assert all("lost" in trials[n].user_attrs for n in (1, 3))


def test_a_ray_trial_that_fails_after_the_restore_fails_its_optuna_trial(crashed) -> None:
    limiter, study = crashed
    with Restoring.these({"a": 0, "b": 2}):
        limiter.on_trial_complete("b", error=True)  # no result: Ray gives the trial id alone
    assert study.trials[2].state == optuna.trial.TrialState.FAIL and study.trials[2].user_attrs["errored"]


def test_the_budget_counts_again_from_the_resume(tmp_path) -> None:
    db = f"sqlite:///{tmp_path / 'study.db'}"
    limiter = BudgetLimiter(_searcher(db), max_concurrent=1, budget_s=60)
    assert limiter.policy is not None and limiter.suggest("a") is not None
    limiter.policy.start = 0.0  # a budget spent long ago
    restored = BudgetLimiter(_searcher(db), max_concurrent=1, budget_s=60)
    with Restoring.these({"a": 0}):
        restored.set_state(limiter.get_state())
    assert restored.policy is not None and restored.policy.start is None and restored.started == {}
