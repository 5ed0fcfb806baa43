"""The searcher side of a sweep: Optuna behind Ray Tune's searcher API, and the limiter in front of it.

`RecordingOptunaSearch` writes what Ray knows of each trial into its Optuna trial (the Ray id, the
epoch of its value, its outcome); `BudgetLimiter` caps the concurrency and applies --time-budget's
soft limit. Both are restored with a Ray experiment on --resume and reconciled with Ray's own
trials there (`Restoring`, `ray_trials_of`). Split from tune_adapter, which runs the sweep.
"""

from __future__ import annotations

import contextlib
import posixpath
import time
from typing import Any

import optuna
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from mmtune.experiment import CUT_KEY, INFEASIBLE_KEY, Outcome, classify
from mmtune.search.budget import BudgetPolicy
from mmtune.search.trial_log import METRIC

TRIAL_DIR_PREFIX = "trial_"  # a trial's folder is this and its Ray trial id (tune_adapter.trial_dirname)


class Restoring:
    """The trials of the Ray experiment being restored (Ray trial id -> Optuna trial number), read
    by `run` before `fit`, for the searcher and limiter that Ray restores inside `fit`."""

    trials: dict[str, int] = {}

    @classmethod
    @contextlib.contextmanager
    def these(cls, trials: dict[str, int]):  # type: ignore[no-untyped-def]
        cls.trials = trials
        try:
            yield
        finally:
            cls.trials = {}



def ray_trials_of(grid: Any) -> dict[str, int]:
    """Ray trial id -> Optuna trial number, of every trial in a restored experiment."""
    out = {}
    for r in grid:
        number = (r.config or {}).get("optuna_trial")
        if number is not None:
            out[posixpath.basename(str(r.path).rstrip("/")).removeprefix(TRIAL_DIR_PREFIX)] = int(number)
    return out


class RecordingOptunaSearch(OptunaSearch):
    """OptunaSearch that also writes, as user attributes of each Optuna trial, the Ray trial id,
    the epoch its reported value was reached at, and whether ASHA stopped it or it diverged.

    OptunaSearch tells Optuna that an ASHA-stopped trial is COMPLETE with its last value; these
    attributes say at which budget that value was measured.
    """

    def _record(self, trial_id: str, result: dict[str, Any]) -> None:
        ot = self._ot_trials.get(trial_id)
        if ot is None or trial_id in self._completed_trials:
            return
        ot.set_user_attr("ray_trial_id", trial_id)
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        ot.set_user_attr("last_epoch", epoch)
        value = result.get(METRIC)
        best = self._best.get(trial_id)
        if value is not None and not result.get("diverged") and (best is None or value < best):
            self._best[trial_id] = float(value)
            ot.set_user_attr("best_val_mse", float(value))
            ot.set_user_attr("best_epoch", epoch)

    @property
    def _best(self) -> dict[str, float]:
        if "_best_values" not in self.__dict__:
            self.__dict__["_best_values"] = {}
        return self.__dict__["_best_values"]

    def restore(self, checkpoint_path: str) -> None:
        """Load the saved searcher (on --resume), then make it agree with Ray's restored trials."""
        super().restore(checkpoint_path)
        self.reconcile(Restoring.trials)

    def reconcile(self, ray_trials: dict[str, int]) -> None:
        """Match the restored searcher to the trials Ray restored (Ray trial id -> Optuna number).

        Ray writes its trials, then the searcher, then copies both to storage, and the driver asks
        Optuna for a trial (written to SQLite at once) before either: a crash in between leaves
        them apart. Ray's trials are what runs, so: a Ray trial the searcher does not know takes
        its Optuna trial back; one it knows that Ray lost is dropped; and an Optuna trial still
        RUNNING that no Ray trial carries is failed as lost (constant-liar TPE would keep treating
        it as in flight, and the dashboard would show it running forever). Ray asks for new trials
        in place of the lost ones.
        """
        study = self._ot_study
        if study is None:  # nothing was ever asked for
            return
        by_number = {ft.number: ft for ft in study.get_trials(deepcopy=False)}
        for trial_id in [t for t in self._ot_trials if t not in ray_trials]:
            del self._ot_trials[trial_id]
        for trial_id, number in ray_trials.items():
            if trial_id not in self._ot_trials and number in by_number:
                self._ot_trials[trial_id] = optuna.trial.Trial(study, by_number[number]._trial_id)
        claimed = {ot.number for ot in self._ot_trials.values()}
        for number, ft in by_number.items():
            if ft.state == optuna.trial.TrialState.RUNNING and number not in claimed:
                optuna.trial.Trial(study, ft._trial_id).set_user_attr(
                    "lost", "asked for just before the driver crashed; its Ray trial was never saved")
                study.tell(number, state=optuna.trial.TrialState.FAIL)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        # After a driver crash the saved searcher can be older than the study: a trial it thinks
        # running may be finished in the SQLite study already. Optuna then refuses updates; the
        # study keeps the value it has and Ray's results keep every row.
        try:
            super().on_trial_result(trial_id, result)
            self._record(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            self._completed_trials.add(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        ot = self._ot_trials.get(trial_id)
        if ot is not None and trial_id not in self._completed_trials:
            try:
                self._record_completion(ot, trial_id, result, error)
            except optuna.exceptions.UpdateFinishedTrialError:
                self._completed_trials.add(trial_id)
                return
        super().on_trial_complete(trial_id, result, error)

    def _record_completion(self, ot: Any, trial_id: str, result: dict[str, Any] | None, error: bool) -> None:
        ot.set_user_attr("errored", bool(error))
        if result:
            self._record(trial_id, result)
            epoch = int(result.get("epoch", result.get("training_iteration", 0)))
            outcome = classify("ERROR" if error else "TERMINATED", bool(result.get("diverged", False)), epoch,
                               int(result.get("epochs_planned", epoch)), bool(result.get(CUT_KEY, False)),
                               bool(result.get(INFEASIBLE_KEY, False)))
            ot.set_user_attr("value_epoch", epoch)  # the epoch whose val_mse Optuna is told
            ot.set_user_attr("diverged", outcome is Outcome.DIVERGED)
            ot.set_user_attr("stopped_early", outcome is Outcome.STOPPED_EARLY)
            ot.set_user_attr(CUT_KEY, outcome is Outcome.CUT_AT_BUDGET)
            if result.get(INFEASIBLE_KEY):
                ot.set_user_attr(INFEASIBLE_KEY, str(result.get("error")))


class BudgetLimiter(ConcurrencyLimiter):
    """The concurrency limit, and --time-budget's soft limit: once a new trial would not end within
    the budget (`BudgetPolicy`), the search is FINISHED and only the running trials go on.

    Ray's `time_budget_s` is the hard limit at the budget itself. Ray stops the trials still running
    then without telling the searcher, so `close_cut_trials` does, after Tuner.fit: each ends with
    `CUT_KEY` in its last result, so that Optuna's trial is complete and it is labelled cut rather
    than stopped early (`cut` holds their ids). On --resume the budget counts again from the resumed
    run's start, as Ray's does.
    """

    def __init__(self, searcher: Searcher, max_concurrent: int, budget_s: float | None) -> None:
        super().__init__(searcher, max_concurrent=max_concurrent)
        self.policy = BudgetPolicy(budget_s) if budget_s else None  # its clock starts at the first suggest
        self.started: dict[str, float] = {}
        self.last: dict[str, dict[str, Any]] = {}  # each running trial's last result
        self.cut: set[str] = set()

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]  # Searcher.FINISHED
        if self.policy is not None and len(self.live_trials) < self.max_concurrent:
            if not self.policy.fits(time.time()):
                return Searcher.FINISHED
        suggestion = super().suggest(trial_id)
        if suggestion not in (None, Searcher.FINISHED):
            self.started[trial_id] = time.time()
        return suggestion

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self._claim(trial_id)
        if self.policy is not None and trial_id in self.started:
            self.policy.on_result(trial_id, time.time() - self.started[trial_id], int(result.get("epoch", 0)),
                                  int(result.get("epochs_planned", 1)))
            self.last[trial_id] = result
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self._claim(trial_id)
        if self.policy is not None and trial_id in self.started:
            now = time.time()
            self.policy.on_complete(trial_id, now - self.started.pop(trial_id))
            last = self.last.pop(trial_id, None)
            result = result or last
            if self.policy.spent(now) and not error:
                self.cut.add(trial_id)
                result = {**(result or {}), CUT_KEY: True}
        super().on_trial_complete(trial_id, result=result, error=error)

    def close_cut_trials(self) -> None:
        """Complete the trials Ray's hard limit stopped (those still running once the budget is spent)."""
        if self.policy is not None and self.policy.spent(time.time()):
            for trial_id in list(self.started):
                self.on_trial_complete(trial_id)

    def set_state(self, state: dict[str, Any]) -> None:
        """On --resume (Ray restores a wrapper's state with this): only Ray's restored trials count
        as live (a trial saved here that Ray lost would hold its slot forever), and the budget
        starts again."""
        super().set_state(state)
        self.live_trials = {t for t in self.live_trials if t in Restoring.trials}
        self.num_unfinished_live_trials = len(self.live_trials)
        if self.policy is not None:
            self.policy = BudgetPolicy(self.policy.budget_s)
        self.started, self.last = {}, {}

    def _claim(self, trial_id: str) -> None:
        # A restored Ray trial that this limiter had not saved as live is live again once Ray runs it.
        searcher = self.searcher
        if (trial_id not in self.live_trials and trial_id in Restoring.trials
                and isinstance(searcher, RecordingOptunaSearch) and trial_id in searcher._ot_trials
                and trial_id not in searcher._completed_trials):
            self.live_trials.add(trial_id)
            self.num_unfinished_live_trials += 1
