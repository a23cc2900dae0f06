"""The sequential test replayed over every rating, so that a decision, once made, stays made.

An always-valid p-value is the running minimum of 1/L over every look, and the confidence
sequence is the running intersection of the intervals: that is what makes "stop at the
first p <= alpha" valid. Recomputing the test from the totals at each read gives only the
last look's p-value, which a few late ratings (feedback that arrives after an automatic
promotion, or a noisy user) can push back above alpha: the experiment was promoted for
"variant-wins" and its results page then said "keep-running". Replaying the ratings in the
order they were given (latest rating per request wins, as everywhere) restores both.

The plug-in variance of a handful of users is itself noisy: two users who agree look like
a certain effect. Read after every rating with no minimum, an A/A experiment declares a
winner about 12% of the time (router/simulation.py, `min_users`); so no look counts until
each arm has MIN_USERS users who rated, which brings that to about 3%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from router.sequential import confidence_sequence, msprt_p_value
from router.unit_stats import RatioEstimate

__all__ = ["MIN_USERS", "ArmSums", "RunningTest", "replay"]

MIN_USERS = 10  # per arm, before a look counts


@dataclass
class ArmSums:
    """Per-user (y, n) of one arm and the sums the delta-method variance needs, updated in
    O(1) per rating."""

    users: dict[str, tuple[float, float]] = field(default_factory=dict)
    sy: float = 0.0
    sn: float = 0.0
    syy: float = 0.0
    snn: float = 0.0
    syn: float = 0.0

    def _add(self, y: float, n: float, sign: float) -> None:
        self.sy += sign * y
        self.sn += sign * n
        self.syy += sign * y * y
        self.snn += sign * n * n
        self.syn += sign * y * n

    def rate(self, who: str, dy: float, dn: float) -> None:
        y, n = self.users.get(who, (0.0, 0.0))
        if who in self.users:
            self._add(y, n, -1.0)
        self.users[who] = (y + dy, n + dn)
        self._add(y + dy, n + dn, 1.0)

    def estimate(self) -> RatioEstimate:
        k, sy, sn = len(self.users), self.sy, self.sn
        if k == 0 or sn <= 0:
            return RatioEstimate(k, sy, sn, None, None)
        ratio = sy / sn
        if k < 2:
            return RatioEstimate(k, sy, sn, ratio, None)
        ybar, nbar = sy / k, sn / k
        s_yy = (self.syy - k * ybar * ybar) / (k - 1)
        s_nn = (self.snn - k * nbar * nbar) / (k - 1)
        s_yn = (self.syn - k * ybar * nbar) / (k - 1)
        variance = max(0.0, (s_yy - 2 * ratio * s_yn + ratio * ratio * s_nn) / (k * nbar * nbar))
        return RatioEstimate(k, sy, sn, ratio, variance)


@dataclass
class RunningTest:
    """One variant against the control, over every look so far."""

    p_value: float = 1.0  # running minimum
    cs: tuple[float, float] = (-math.inf, math.inf)  # running intersection
    looks: int = 0

    def look(self, control: RatioEstimate, variant: RatioEstimate, *, tau: float,
             alpha: float) -> None:
        if min(control.users, variant.users) < MIN_USERS:
            return
        if control.ratio is None or variant.ratio is None:
            return
        if control.variance is None or variant.variance is None:
            return
        variance = control.variance + variant.variance
        if not (variance > 0 and math.isfinite(variance)):
            return
        estimate = variant.ratio - control.ratio
        self.looks += 1
        self.p_value = min(self.p_value, msprt_p_value(estimate, variance, tau))
        lo, hi = confidence_sequence(estimate, variance, tau, alpha)
        self.cs = (max(self.cs[0], lo), min(self.cs[1], hi))

    def decision(self, *, alpha: float, min_effect: float) -> str:
        if self.p_value <= alpha:
            # The look that crossed alpha had an interval excluding 0; the intersection
            # keeps that side (lo > 0 or hi < 0) from then on.
            return "variant-wins" if self.cs[0] > 0 else "control-wins"
        if self.looks and -min_effect < self.cs[0] and self.cs[1] < min_effect:
            return "no-difference"
        return "keep-running"


def replay(ratings: list[tuple[str, str, int, float]], control: str, variants: list[str], *,
           tau: float, alpha: float) -> tuple[dict[str, RatioEstimate], dict[str, RunningTest]]:
    """`ratings`: (variant, user, request id, value) in the order given. A later rating of
    the same request replaces the earlier one. Returns the final estimates per arm and the
    running test of each non-control variant."""
    arms = {ref: ArmSums() for ref in [control, *variants]}
    tests = {ref: RunningTest() for ref in variants}
    last: dict[int, float] = {}
    for variant, who, request_id, value in ratings:
        arm = arms.get(variant)
        if arm is None:
            continue
        if request_id in last:
            arm.rate(who, value - last[request_id], 0.0)
        else:
            arm.rate(who, value, 1.0)
        last[request_id] = value
        c = arms[control].estimate()
        for ref in (variants if variant == control else [variant]):
            tests[ref].look(c, arms[ref].estimate(), tau=tau, alpha=alpha)
    return {ref: arm.estimate() for ref, arm in arms.items()}, tests
