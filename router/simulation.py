"""Simulated experiments that check the statistics against what they promise.

Each experiment randomises users 50/50. A user has their own positive rate, drawn from a
Beta around the arm's rate (users differ: `concentration` is the Beta's a + b, lower
means more different), and gives 1 + Poisson(mean_ratings - 1) thumbs. Results are
read after every `peek_every` users, the way an analyst refreshes the results page.

Three tests are read at every peek, each "stopping" at its first rejection:
- the sequential test (router/sequential.py) on the per-user delta-method difference;
- the fixed-horizon z-test on the same difference, which is valid read once, at the end;
- the request-level z-test that treats every thumb as independent (the old results).

numpy is imported inside the functions: the router must stay light to import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["bootstrap_ratio_variance", "simulate_experiments", "simulate_users"]

Z95 = 1.959963984540054


def simulate_users(rng, users: int, rate: float, *, concentration: float = 4.0,
                   mean_ratings: float = 3.0):
    """(y, n) arrays: positive thumbs and thumbs given, per user."""
    n = 1 + rng.poisson(mean_ratings - 1, size=users)
    p = rng.beta(rate * concentration, (1 - rate) * concentration, size=users)
    return rng.binomial(n, p), n


def bootstrap_ratio_variance(per_unit: Sequence[tuple[float, float]], *, resamples: int = 2000,
                             seed: int = 0) -> float:
    """Variance of sum(y)/sum(n) over resamples of whole users (the reference for the delta method)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    data = np.asarray(per_unit, dtype=float)
    idx = rng.integers(0, len(data), size=(resamples, len(data)))
    ratios = data[idx, 0].sum(axis=1) / data[idx, 1].sum(axis=1)
    return float(ratios.var(ddof=1))


def simulate_experiments(
    *, experiments: int = 1000, users: int = 1000, peek_every: int = 50, rate: float = 0.6,
    effect: float = 0.0, concentration: float = 4.0, mean_ratings: float = 3.0, tau: float = 0.1,
    alpha: float = 0.05, seed: int = 0, min_users: int = 0,
) -> dict:
    """Share of experiments each test has rejected by each peek (cumulative), and at the end."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = (experiments, users)
    arm = rng.integers(0, 2, size=shape)
    n = 1 + rng.poisson(mean_ratings - 1, size=shape)
    mean = rate + effect * arm
    p = rng.beta(mean * concentration, (1 - mean) * concentration)
    y = rng.binomial(n, p)
    peeks = np.arange(peek_every, users + 1, peek_every)

    def arm_stats(a: int):
        m = (arm == a).astype(float)
        sums = [np.cumsum(m * v, axis=1)[:, peeks - 1] for v in (m, y, n, y * y, n * n, y * n)]
        k, sy, sn, syy, snn, syn = sums
        with np.errstate(divide="ignore", invalid="ignore"):
            r = sy / sn
            ybar, nbar = sy / k, sn / k
            s_yy = (syy - k * ybar ** 2) / (k - 1)
            s_nn = (snn - k * nbar ** 2) / (k - 1)
            s_yn = (syn - k * ybar * nbar) / (k - 1)
            var = (s_yy - 2 * r * s_yn + r * r * s_nn) / (k * nbar ** 2)
            naive = r * (1 - r) / sn
        return r, var, naive, k

    r0, v0, n0, k0 = arm_stats(0)
    r1, v1, n1, k1 = arm_stats(1)
    d, v = r1 - r0, v0 + v1
    tau2 = tau * tau
    with np.errstate(divide="ignore", invalid="ignore"):
        log_l = 0.5 * np.log(v / (v + tau2)) + tau2 * d * d / (2 * v * (v + tau2))
        sequential = (np.nan_to_num(log_l, nan=-np.inf) >= math.log(1 / alpha)) & (
            np.minimum(k0, k1) >= min_users)
        z_crit = _z_two_sided(alpha)
        fixed = np.nan_to_num(np.abs(d) / np.sqrt(v)) > z_crit
        requests = np.nan_to_num(np.abs(d) / np.sqrt(n0 + n1)) > z_crit

    def curve(rejected):
        return np.logical_or.accumulate(rejected, axis=1).mean(axis=0)

    seq_curve, fixed_curve, req_curve = curve(sequential), curve(fixed), curve(requests)
    return {
        "experiments": experiments, "users": users, "peek_every": peek_every, "peeks": peeks.tolist(),
        "rate": rate, "effect": effect, "alpha": alpha, "tau": tau, "min_users": min_users,
        "sequential_rejected_by_peek": seq_curve.tolist(),
        "fixed_rejected_by_peek": fixed_curve.tolist(),
        "request_level_rejected_by_peek": req_curve.tolist(),
        "sequential_any_peek": float(seq_curve[-1]),
        "fixed_any_peek": float(fixed_curve[-1]),
        "fixed_final_only": float(fixed[:, -1].mean()),
        "request_level_any_peek": float(req_curve[-1]),
    }


def _z_two_sided(alpha: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1 - alpha / 2))
