"""Optical-flow input channels for ConvTAU (placeholder until the flow estimators land)."""

from __future__ import annotations

import numpy as np

from mmtune.errors import MMTuneError

FLOW_ESTIMATORS = ("none",)


def check_estimator(name: str) -> None:
    """Raise MMTuneError (one line: what is missing, what to do) unless `name` can run here."""
    if name not in FLOW_ESTIMATORS:
        raise MMTuneError(f"unknown flow estimator {name!r}; expected one of {list(FLOW_ESTIMATORS)}")


def flow_inputs(data: object, split: str, estimator: str, epoch: int = 0) -> np.ndarray | None:
    """Flow channels (N, 10, 2, 64, 64) float16 of a split, or None for estimator "none"."""
    check_estimator(estimator)
    return None
