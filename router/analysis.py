"""Experiment statistics as pure functions: counts in, numbers out.

The distributions come from scipy (imported on first use: the router is imported by every
CLI command and the server, and scipy.stats alone takes a second or more to import).
Conventions (what the results page and JSON state):
- proportions: Wilson score interval, 95%;
- mean scores: Student t interval, 95%;
- lift of a proportion: two-proportion z-test (pooled variance) for the p-value, normal
  (unpooled) interval for the absolute difference;
- lift of a mean: Welch's t-test and Welch interval;
- chance to win: P(p_variant > p_control) under independent Beta(1 + positives,
  1 + negatives) posteriors (uniform prior), computed exactly;
- sample-ratio mismatch: chi-square goodness of fit of unit counts against the weights,
  flagged when p < 0.001.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "SRM_THRESHOLD",
    "Z95",
    "beta_chance_to_win",
    "diff_interval",
    "mean_interval",
    "srm_test",
    "two_proportion_ztest",
    "welch_interval",
    "welch_ttest",
    "wilson_interval",
]

Z95 = 1.959963984540054  # scipy.stats.norm.ppf(0.975)
SRM_THRESHOLD = 0.001


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for k successes in n trials (None when n = 0)."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_ztest(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float] | None:
    """(z, two-sided p) for p2 - p1 with the pooled proportion; None if undefined."""
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return None
    from scipy.stats import norm

    z = (k2 / n2 - k1 / n1) / se
    return z, 2 * float(norm.sf(abs(z)))


def diff_interval(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float] | None:
    """Normal (unpooled) interval for p2 - p1."""
    if n1 <= 0 or n2 <= 0:
        return None
    p1, p2 = k1 / n1, k2 / n2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return p2 - p1 - z * se, p2 - p1 + z * se


def mean_interval(mean: float, sd: float, n: int) -> tuple[float, float] | None:
    """Student t 95% interval for a mean (sd with ddof = 1); None when n < 2."""
    if n < 2:
        return None
    from scipy.stats import t

    half = float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def _welch_parts(s1: float, n1: int, s2: float, n2: int) -> tuple[float, float] | None:
    if n1 < 2 or n2 < 2:
        return None
    v1, v2 = s1 * s1 / n1, s2 * s2 / n2
    if v1 + v2 == 0:
        return None
    df = (v1 + v2) ** 2 / (v1 * v1 / (n1 - 1) + v2 * v2 / (n2 - 1))
    return math.sqrt(v1 + v2), df


def welch_ttest(
    m1: float, s1: float, n1: int, m2: float, s2: float, n2: int
) -> tuple[float, float, float] | None:
    """(t, df, two-sided p) for mean2 - mean1 with unequal variances."""
    parts = _welch_parts(s1, n1, s2, n2)
    if parts is None:
        return None
    from scipy.stats import t as student

    se, df = parts
    t = (m2 - m1) / se
    return t, df, 2 * float(student.sf(abs(t), df))


def welch_interval(
    m1: float, s1: float, n1: int, m2: float, s2: float, n2: int
) -> tuple[float, float] | None:
    parts = _welch_parts(s1, n1, s2, n2)
    if parts is None:
        return None
    from scipy.stats import t

    se, df = parts
    half = float(t.ppf(0.975, df)) * se
    return m2 - m1 - half, m2 - m1 + half


def _prob_b_beats_a(aa: int, ba: int, ab: int, bb: int) -> float:
    """Exact P(X_B > X_A), X ~ Beta, integer alpha_B (Evan Miller's closed form)."""
    import numpy as np
    from scipy.special import betaln

    i = np.arange(ab)
    terms = np.exp(betaln(aa + i, ba + bb) - np.log(bb + i) - betaln(1 + i, bb) - betaln(aa, ba))
    return math.fsum(terms.tolist())


def beta_chance_to_win(
    pos_c: int, neg_c: int, pos_v: int, neg_v: int, exact_limit: int = 200_000
) -> float:
    """P(rate_variant > rate_control), Beta(1 + pos, 1 + neg) posteriors.

    Exact sum over the smaller alpha; above `exact_limit` terms a normal approximation
    of the two posteriors (accurate far beyond 1e-6 at such counts).
    """
    ac, bc, av, bv = 1 + pos_c, 1 + neg_c, 1 + pos_v, 1 + neg_v
    if min(ac, av) <= exact_limit:
        if av <= ac:
            return min(1.0, max(0.0, _prob_b_beats_a(ac, bc, av, bv)))
        return min(1.0, max(0.0, 1.0 - _prob_b_beats_a(av, bv, ac, bc)))
    mc, mv = ac / (ac + bc), av / (av + bv)
    vc = ac * bc / ((ac + bc) ** 2 * (ac + bc + 1))
    vv = av * bv / ((av + bv) ** 2 * (av + bv + 1))
    from scipy.stats import norm

    return float(norm.cdf((mv - mc) / math.sqrt(vc + vv)))


def srm_test(observed: Sequence[int], weights: Sequence[float]) -> tuple[float, int, float] | None:
    """(chi2, df, p) of observed counts against weights; variants with weight 0 must be empty.

    None when there is nothing to test (fewer than two weighted variants or no units).
    """
    total_w = sum(w for w in weights if w > 0)
    n = sum(observed)
    live = [(o, w) for o, w in zip(observed, weights, strict=True) if w > 0]
    if len(live) < 2 or n == 0:
        return None
    if any(o > 0 for o, w in zip(observed, weights, strict=True) if w <= 0):
        return float("inf"), len(live) - 1, 0.0
    from scipy.stats import chisquare

    test = chisquare([o for o, _ in live], [n * w / total_w for _, w in live])
    return float(test.statistic), len(live) - 1, float(test.pvalue)
