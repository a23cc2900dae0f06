"""Deterministic, sticky assignment: hash (salt, unit) into fixed buckets, as GrowthBook
and Statsig do.

Each experiment has a random salt fixed at creation. A unit (user id) hashes to one of
`BUCKETS` buckets; variants own contiguous bucket ranges in declaration order, sized by
weight. So the same unit always lands in the same variant while the weights stay put,
and different experiments (different salts) assign independently.

Changing weights moves range boundaries: a unit whose bucket now falls in another
variant's range switches to it; every other unit stays where it was. Going from 50/50 to
70/30 (A, B) moves exactly the units in buckets [5000, 7000) from B to A.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

__all__ = ["BUCKETS", "bucket_of", "bucket_ranges", "pick", "random_bucket"]

BUCKETS = 10_000


def bucket_of(salt: str, unit: str) -> int:
    """Bucket in [0, BUCKETS) for this unit; 64 bits of sha256 make the modulo bias ~1e-15."""
    digest = hashlib.sha256(f"{salt}:{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def random_bucket() -> int:
    """For requests with no unit: each request is its own unit, so any bucket will do."""
    return random.randrange(BUCKETS)


def bucket_ranges(weights: Sequence[int]) -> list[tuple[int, int]]:
    """Half-open [start, end) bucket range per variant, contiguous, in order.

    Boundaries are floor(cumulative weight / total * BUCKETS), so ranges are exact to
    one bucket in 10,000 and a zero weight gets an empty range.
    """
    total = sum(weights)
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError("weights must be non-negative with a positive sum")
    ranges: list[tuple[int, int]] = []
    cumulative = 0
    start = 0
    for weight in weights:
        cumulative += weight
        end = cumulative * BUCKETS // total
        ranges.append((start, end))
        start = end
    return ranges


def pick(bucket: int, ends: Sequence[int]) -> int:
    """Index of the variant whose range holds `bucket`; `ends` are the ranges' ends."""
    for index, end in enumerate(ends):
        if bucket < end:
            return index
    return len(ends) - 1
