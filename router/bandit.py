"""Bandit experiments: Thompson sampling moves new users toward the variant that is winning.

Each variant's positive rate gets a Beta(1 + up, 1 + down) posterior from its latest thumbs.
On a schedule (`bandit_interval_s`), the weights become each variant's probability of
having the highest rate, estimated by drawing from the posteriors, mixed with a floor:

    share_i = min_share + (1 - k * min_share) * P(variant i is best)

so no variant starves while the evidence is thin (`min_share`, default 10%), and the weights
are written as an ordinary weight change (recorded, so the SRM check counts from it).

Users already assigned keep their variant: a bandit experiment remembers each unit's
variant (the router holds the map in memory, rebuilt from the request log at start), and
the weights only steer users it has not seen. Without that, moving the weights would move
the users in the buckets between the old and new boundaries to the other variant.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["WEIGHT_SCALE", "thompson_weights"]

WEIGHT_SCALE = 10_000  # weights are integers; shares are written to one part in 10,000


def thompson_weights(
    counts: Sequence[tuple[int, int]], *, min_share: float, draws: int = 20_000, seed: int = 0,
) -> tuple[list[int], list[float]]:
    """(integer weights, P(best) per variant) from (positive, negative) thumbs per variant."""
    import numpy as np

    k = len(counts)
    rng = np.random.default_rng(seed)
    pos = np.array([c[0] for c in counts], dtype=float)
    neg = np.array([c[1] for c in counts], dtype=float)
    samples = rng.beta(1 + pos, 1 + neg, size=(draws, k))
    p_best = np.bincount(samples.argmax(axis=1), minlength=k) / draws
    shares = min_share + (1 - k * min_share) * p_best
    weights = [int(round(s * WEIGHT_SCALE)) for s in shares]
    if sum(weights) <= 0:
        weights = [1] * k
    return weights, [float(p) for p in p_best]
