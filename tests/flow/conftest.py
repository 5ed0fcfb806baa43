"""Fixtures of the flow tests."""

from __future__ import annotations

import pytest

from mmtune.flow.estimators import Farneback


@pytest.fixture
def estimate_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of frames of each Farneback.estimate call made during the test (a cache hit makes none)."""
    calls: list[int] = []
    original = Farneback.estimate

    def counting(self, frames, truth=None):
        calls.append(len(frames))
        return original(self, frames, truth)

    monkeypatch.setattr(Farneback, "estimate", counting)
    return calls
