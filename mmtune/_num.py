"""Numbers from loose records (JSON, Ray's result rows): a float or NaN, never an exception."""

from __future__ import annotations

import math
from typing import Any


def as_finite(x: Any) -> float:
    """`x` as a float when it is a finite number, else NaN (None, strings, inf and NaN alike)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def is_finite(x: Any) -> bool:
    """True for a real, finite number (False for None, NaN, inf and non-numbers)."""
    return not math.isnan(as_finite(x))
