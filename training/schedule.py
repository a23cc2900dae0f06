"""The learning-rate schedule of both plain-torch loops: the base build and SFT.

One function so the two cannot drift: linear warm-up to the peak, then a cosine down to a
floor of 5% of the peak (not zero, so the last steps of a run still train).
"""

from __future__ import annotations

import math

__all__ = ["warmup_cosine"]


def warmup_cosine(step: int, total: int, warmup: int, peak: float) -> float:
    """The learning rate at 0-based `step` of `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
