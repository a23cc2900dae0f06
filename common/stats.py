"""Descriptive statistics shared by the experiment results and the benchmarks."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["quantile"]


def quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (q in [0, 1]) by linear interpolation between order statistics,
    numpy's default, so reported p50/p95 match what a reader recomputes; None if empty."""
    if not values:
        return None
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
