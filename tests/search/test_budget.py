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


def test_policy_projects_running_trials_then_uses_the_slowest_finished_one() -> None:
    p = BudgetPolicy(budget_s=100.0)
    assert p.fits(now=1000.0) and p.start == 1000.0  # the clock starts at the first ask; nothing known: start
    p.on_result("a", seconds=10.0, epoch=1, planned=4)  # projected 40 s
    p.on_result("b", seconds=10.0, epoch=2, planned=4)  # projected 20 s
    assert p.expected_trial_s() == 40.0  # the slower projection
    assert p.fits(now=1060.0) and not p.fits(now=1061.0)
    assert p.last_start == (60.0, 40.0)  # the last yes: 60 s in, expecting 40 s
    p.on_complete("a", seconds=20.0)  # ASHA stopped it after 2 epochs: 20 s
    p.on_complete("b", seconds=30.0)
    assert p.running == {} and p.expected_trial_s() == 30.0  # the slowest, not the median 25
    assert p.fits(now=1070.0) and not p.fits(now=1070.5)
    assert p.refused == 2
    p.on_complete("c", seconds=None)  # never reported: nothing to learn
    assert p.finished == [20.0, 30.0]


def test_policy_says_when_the_budget_is_spent() -> None:
    p = BudgetPolicy(budget_s=60.0)
    assert not p.spent(now=5.0)  # not started yet
    p.fits(now=10.0)
    assert not p.spent(now=69.9) and p.spent(now=70.0)
