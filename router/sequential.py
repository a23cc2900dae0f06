"""A sequential test that stays valid however often the results are read.

Analysts read results continuously. A fixed-horizon test read after every batch and
stopped at the first p < 0.05 rejects a true null far more often than 5% (the simulation
in `router/simulation.py` measures how much). The mixture sequential probability ratio
test (mSPRT) does not: for the difference D between variant and control, estimated as d
with variance V, mixing the alternative over D ~ N(0, tau^2) gives the likelihood ratio

    L = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))

which is a nonnegative martingale under "no difference", so by Ville's inequality it ever
exceeds 1/alpha with probability at most alpha, at whatever moments it is looked at.
The always-valid p-value is min(1, 1/L); the matching (1 - alpha) confidence sequence is

    d +/- sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)))

and excludes 0 exactly when p <= alpha. tau is the scale of effects we expect: a larger
tau detects large effects sooner and small ones later. The price of validity under
peeking is width: at a fixed sample the sequence is wider than the fixed-horizon interval.

The decision, per variant against control:
- "variant-wins" / "control-wins": p <= alpha, by the sign of d;
- "no-difference": the whole confidence sequence lies within +/- min_effect, the smallest
  effect worth acting on, so whatever the difference is, it does not matter;
- "keep-running": otherwise; `mde` says what a fixed-horizon test could detect (80% power)
  with the data so far, a guide to how far from a decision the experiment is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DECISIONS", "SequentialResult", "confidence_sequence", "msprt_p_value", "sequential_test"]

DECISIONS = ("keep-running", "variant-wins", "control-wins", "no-difference")
Z_POWER80 = 0.8416212335729143  # norm.ppf(0.8)


@dataclass(frozen=True)
class SequentialResult:
    estimate: float
    se: float
    p_value: float  # always-valid at this look
    cs: tuple[float, float]  # (1 - alpha) confidence sequence
    decision: str
    mde: float  # fixed-horizon minimum detectable effect at this sample (alpha, 80% power)
    alpha: float
    tau: float
    min_effect: float

    def as_dict(self) -> dict:
        return {"test": "mixture SPRT (Gaussian mixture, always-valid)", "estimate": self.estimate,
                "se": self.se, "p_value": self.p_value, "confidence_sequence": list(self.cs),
                "decision": self.decision, "mde": self.mde, "alpha": self.alpha, "tau": self.tau,
                "min_effect": self.min_effect}


def msprt_p_value(estimate: float, variance: float, tau: float) -> float:
    tau2 = tau * tau
    log_l = 0.5 * math.log(variance / (variance + tau2)) + (
        tau2 * estimate * estimate / (2 * variance * (variance + tau2)))
    return 1.0 if log_l <= 0 else math.exp(-log_l)


def confidence_sequence(estimate: float, variance: float, tau: float, alpha: float) -> tuple[float, float]:
    tau2 = tau * tau
    half = math.sqrt(variance * (variance + tau2) / tau2
                     * (2 * math.log(1 / alpha) + math.log((variance + tau2) / variance)))
    return estimate - half, estimate + half


def sequential_test(
    estimate: float, variance: float, *, tau: float, min_effect: float, alpha: float = 0.05,
) -> SequentialResult | None:
    """The mSPRT's p-value, confidence sequence and decision; None without a usable variance."""
    if not (variance > 0 and math.isfinite(variance) and math.isfinite(estimate)):
        return None
    if not (tau > 0 and 0 < alpha < 1 and min_effect >= 0):
        raise ValueError("tau must be > 0, alpha in (0, 1), min_effect >= 0")
    p = msprt_p_value(estimate, variance, tau)
    lo, hi = confidence_sequence(estimate, variance, tau, alpha)
    if p <= alpha:
        decision = "variant-wins" if estimate > 0 else "control-wins"
    elif -min_effect < lo and hi < min_effect:
        decision = "no-difference"
    else:
        decision = "keep-running"
    z_alpha = _z(1 - alpha / 2)
    se = math.sqrt(variance)
    return SequentialResult(estimate, se, p, (lo, hi), decision, (z_alpha + Z_POWER80) * se,
                            alpha, tau, min_effect)


def _z(q: float) -> float:
    from scipy.stats import norm  # lazily: see router/analysis.py

    return float(norm.ppf(q))
