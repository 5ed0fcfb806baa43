"""--time-budget arithmetic: parsing, and when a new trial still fits."""

from __future__ import annotations

import pytest

from mmtune.errors import MMTuneError
from mmtune.search.budget import BudgetPolicy, format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400),
                                               ("1.5h", 5400), (" 1d ", 86400), ("1m30s", 90)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "m", "30x", "-5m", "0m", "30m junk", "h1"])
def test_bad_durations_are_one_line(text: str) -> None:
    with pytest.raises(MMTuneError, match="--time-budget"):
        parse_duration(text)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (5400, 95, 0, 3600)] == ["1h30m", "1m35s", "0s", "1h"]


def test_policy_projects_running_trials_then_uses_finished_ones() -> None:
    p = BudgetPolicy(budget_s=100.0, start=0.0)
    assert p.fits(now=90.0)  # nothing known: start
    p.on_result("a", seconds=10.0, epoch=1, planned=4)  # projected 40 s
    assert p.expected_trial_s() == 40.0
    assert p.fits(now=60.0) and not p.fits(now=61.0)
    p.on_complete("a", seconds=20.0)  # ASHA stopped it after 2 epochs: 20 s
    assert p.running == {} and p.expected_trial_s() == 20.0
    assert p.fits(now=80.0) and not p.fits(now=80.5)
    assert p.refused == 2
    p.on_complete("b", seconds=None)  # never reported: nothing to learn
    assert p.finished == [20.0]
