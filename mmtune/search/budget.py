"""`--time-budget 30m`: a sweep's budget in wall time, the way a researcher plans one.

Two limits work together. The soft one, `BudgetPolicy`, is asked before each new trial: it is not
started when the time used plus the trial's expected length would pass the budget (expected: the
slowest finished trial so far, or, before any has finished, the projection of the running ones
from their epochs so far; the slowest rather than the median, so that a trial slower than usual,
on a machine that is busy, still ends within the budget). The hard one is Ray's `time_budget_s` at
the budget itself: a trial still running then is cut, keeps its checkpoint of the last epoch it
finished, and is labelled "cut at the time budget", not "stopped early". Either way the sweep then
tests each family's best trial and writes its report.

Both clocks start when the sweep asks for its first trial, inside Tuner.fit, as Ray's does.
This module holds the arithmetic; the Ray adapter calls it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mmtune.errors import MMTuneError

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``30m``, ``2h``, ``1h30m`` or ``1.5h``.

    >>> parse_duration("1h30m")
    5400.0

    Raises:
        MMTuneError: not a positive duration with units.
    """
    s = str(text).strip().lower().replace(" ", "")
    parts = _PART.findall(s)
    if not s or "".join(n + u for n, u in parts) != s:
        raise MMTuneError(f"--time-budget must be a duration with units such as 90s, 30m, 2h or 1h30m, got {text!r}")
    seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if seconds <= 0:
        raise MMTuneError(f"--time-budget must be more than 0, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """`5400` -> ``1h30m``; `95` -> ``1m35s`` (the report's and the console's way of writing a budget)."""
    s = int(round(seconds))
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (sec, "s")) if v) or "0s"


@dataclass
class BudgetPolicy:
    """Whether one more trial fits in what is left of the budget.

    Args:
        budget_s: the whole budget, seconds.
        start: when the sweep started (the clock's seconds); None: at the first `fits` call.
    """

    budget_s: float
    start: float | None = None
    finished: list[float] = field(default_factory=list)  # wall seconds of each finished trial
    running: dict[str, tuple[float, int, int]] = field(default_factory=dict)  # id -> (seconds, epoch, planned)
    refused: int = 0  # trials not started because they would not fit
    last_start: tuple[float, float] | None = None  # the last trial started: (seconds into the budget, expected)

    def expected_trial_s(self) -> float:
        """A new trial's expected wall time (0 when nothing is known yet: the first trials always start)."""
        if self.finished:
            return max(self.finished)
        projected = [secs / epoch * planned for secs, epoch, planned in self.running.values() if epoch > 0]
        return max(projected) if projected else 0.0

    def fits(self, now: float) -> bool:
        """True when a trial started at `now` is expected to end within the budget."""
        if self.start is None:
            self.start = now
        into, expected = now - self.start, self.expected_trial_s()
        ok = into + expected <= self.budget_s
        if ok:
            self.last_start = (into, expected)
        else:
            self.refused += 1
        return ok

    def spent(self, now: float) -> bool:
        """True once the whole budget has passed: a trial that ends now short of its epochs was cut."""
        return self.start is not None and now - self.start >= self.budget_s

    def on_result(self, trial_id: str, seconds: float, epoch: int, planned: int) -> None:
        """A running trial reported an epoch (`seconds`: its wall time so far)."""
        self.running[trial_id] = (seconds, epoch, planned)

    def on_complete(self, trial_id: str, seconds: float | None) -> None:
        """A trial ended (finished, stopped early or failed): its wall time feeds the estimate."""
        last = self.running.pop(trial_id, None)
        secs = seconds if seconds is not None else (last[0] if last else None)
        if secs is not None and secs > 0:
            self.finished.append(float(secs))
