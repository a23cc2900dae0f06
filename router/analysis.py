"""Experiment statistics as pure functions: counts in, numbers out.

No scipy at run time: the few special functions needed (normal CDF, regularized incomplete
beta and gamma) are implemented here and checked against scipy to 1e-6 in the tests.
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
    "betainc",
    "chi2_sf",
    "diff_interval",
    "gammaincc",
    "mean_interval",
    "normal_cdf",
    "quantile",
    "srm_test",
    "t_ppf",
    "t_sf",
    "two_proportion_ztest",
    "welch_interval",
    "welch_ttest",
    "wilson_interval",
]

Z95 = 1.959963984540054  # normal quantile at 0.975
SRM_THRESHOLD = 0.001
_EPS = 1e-15
_TINY = 1e-300


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


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
    z = (k2 / n2 - k1 / n1) / se
    return z, math.erfc(abs(z) / math.sqrt(2.0))


def diff_interval(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float] | None:
    """Normal (unpooled) interval for p2 - p1."""
    if n1 <= 0 or n2 <= 0:
        return None
    p1, p2 = k1 / n1, k2 / n2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return p2 - p1 - z * se, p2 - p1 + z * se


# --- special functions -------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def gammaincc(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x)."""
    if x <= 0:
        return 1.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:  # series for P, then complement
        term = total = 1.0 / a
        ap = a
        for _ in range(100_000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    b = x + 1 - a  # continued fraction for Q
    c = 1 / _TINY
    d = 1 / b
    h = d
    for i in range(1, 100_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = b + an / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1) < _EPS:
            break
    return math.exp(log_front) * h


def chi2_sf(x: float, df: int) -> float:
    return gammaincc(df / 2.0, x / 2.0)


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df degrees of freedom (df may be fractional)."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t (bisection on t_sf; only a handful of calls per report)."""
    if not 0 < q < 1:
        raise ValueError("q must be in (0, 1)")
    if q < 0.5:
        return -t_ppf(1 - q, df)
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > 1 - q:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_sf(mid, df) > 1 - q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2


def mean_interval(mean: float, sd: float, n: int) -> tuple[float, float] | None:
    """Student t 95% interval for a mean (sd with ddof = 1); None when n < 2."""
    if n < 2:
        return None
    half = t_ppf(0.975, n - 1) * sd / math.sqrt(n)
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
    se, df = parts
    t = (m2 - m1) / se
    return t, df, 2 * t_sf(abs(t), df)


def welch_interval(
    m1: float, s1: float, n1: int, m2: float, s2: float, n2: int
) -> tuple[float, float] | None:
    parts = _welch_parts(s1, n1, s2, n2)
    if parts is None:
        return None
    se, df = parts
    half = t_ppf(0.975, df) * se
    return m2 - m1 - half, m2 - m1 + half


def _lbeta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _prob_b_beats_a(aa: int, ba: int, ab: int, bb: int) -> float:
    """Exact P(X_B > X_A), X ~ Beta, integer alpha_B (Evan Miller's closed form)."""
    base = _lbeta(aa, ba)
    terms = (
        math.exp(_lbeta(aa + i, ba + bb) - math.log(bb + i) - _lbeta(1 + i, bb) - base)
        for i in range(ab)
    )
    return math.fsum(terms)


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
    return normal_cdf((mv - mc) / math.sqrt(vc + vv))


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
    chi2 = sum((o - n * w / total_w) ** 2 / (n * w / total_w) for o, w in live)
    df = len(live) - 1
    return chi2, df, chi2_sf(chi2, df)


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between order statistics (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
