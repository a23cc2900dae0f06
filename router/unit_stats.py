"""Metrics over users, the unit an experiment randomises, not over requests.

A user with twenty rated requests is one draw of "how this variant treats a user", not
twenty independent trials: their ratings share the user's taste and prompts. Counting
requests as trials makes intervals too narrow and p-values too small whenever users come
back. So each variant's metric is a ratio of per-user sums, R = sum(y_u) / sum(n_u) (y_u: a
user's positive thumbs or score total, n_u: how many they gave), and its variance comes from
the delta method over users:

    Var(R) ~= (s_yy - 2 R s_yn + R^2 s_nn) / (k * nbar^2)

with k users, nbar the mean of n_u, and s the sample (co)variances of (y_u, n_u) across
users. R equals the request-level rate; only its uncertainty changes. Requests without a
user id count as users of their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["RatioEstimate", "ratio_by_units", "ratio_difference"]

Z95 = 1.959963984540054


@dataclass(frozen=True)
class RatioEstimate:
    users: int
    numerator: float  # sum of y over users
    denominator: float  # sum of n over users (ratings given)
    ratio: float | None
    variance: float | None  # delta-method variance of the ratio (None below 2 rating users)

    @property
    def se(self) -> float | None:
        return None if self.variance is None else math.sqrt(self.variance)

    def ci95(self) -> tuple[float, float] | None:
        if self.ratio is None or self.se is None:
            return None
        return self.ratio - Z95 * self.se, self.ratio + Z95 * self.se


def ratio_by_units(per_unit: Sequence[tuple[float, float]]) -> RatioEstimate:
    """(y_u, n_u) per user who gave at least one rating -> the ratio and its variance."""
    rows = [(float(y), float(n)) for y, n in per_unit if n > 0]
    k = len(rows)
    sy = math.fsum(y for y, _ in rows)
    sn = math.fsum(n for _, n in rows)
    if k == 0 or sn == 0:
        return RatioEstimate(k, sy, sn, None, None)
    ratio = sy / sn
    if k < 2:
        return RatioEstimate(k, sy, sn, ratio, None)
    ybar, nbar = sy / k, sn / k
    s_yy = math.fsum((y - ybar) ** 2 for y, _ in rows) / (k - 1)
    s_nn = math.fsum((n - nbar) ** 2 for _, n in rows) / (k - 1)
    s_yn = math.fsum((y - ybar) * (n - nbar) for y, n in rows) / (k - 1)
    variance = max(0.0, (s_yy - 2 * ratio * s_yn + ratio * ratio * s_nn) / (k * nbar * nbar))
    return RatioEstimate(k, sy, sn, ratio, variance)


def ratio_difference(control: RatioEstimate, variant: RatioEstimate) -> dict:
    """Variant minus control over independent user groups: estimate, variance, z, p, 95% CI."""
    out: dict = {"absolute": None, "variance": None, "ci95": None, "z": None, "p_value": None}
    if control.ratio is None or variant.ratio is None:
        return out
    out["absolute"] = variant.ratio - control.ratio
    if control.variance is None or variant.variance is None:
        return out
    var = control.variance + variant.variance
    out["variance"] = var
    if var <= 0:
        return out
    se = math.sqrt(var)
    out["ci95"] = (out["absolute"] - Z95 * se, out["absolute"] + Z95 * se)
    out["z"] = out["absolute"] / se
    out["p_value"] = math.erfc(abs(out["z"]) / math.sqrt(2))
    return out
