"""Fixtures shared by every test folder."""

from __future__ import annotations

import pytest

from mmtune.training import loop


@pytest.fixture
def bf16_on_cpu(monkeypatch: pytest.MonkeyPatch):
    """The loop's CPU bf16 autocast forced on (native bf16 or emulated), so the fast path really
    differs from fp32 eager on every CPU."""
    monkeypatch.setenv("MMTUNE_CPU_BF16", "1")
    loop.cpu_bf16_supported.cache_clear()
    yield
    loop.cpu_bf16_supported.cache_clear()
