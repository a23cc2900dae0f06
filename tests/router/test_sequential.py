"""Per-user statistics and the sequential test, checked against references and simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from router.sequential import sequential_test
from router.simulation import bootstrap_ratio_variance, simulate_experiments, simulate_users
from router.unit_stats import ratio_by_units, ratio_difference


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delta_method_variance_agrees_with_a_bootstrap_over_users(seed: int) -> None:
    y, n = simulate_users(np.random.default_rng(seed), 800, 0.6)  # 1-10 thumbs per user
    per_user = list(zip(y.tolist(), n.tolist(), strict=True))
    est = ratio_by_units(per_user)
    boot = bootstrap_ratio_variance(per_user, resamples=4000, seed=seed)
    assert est.ratio == pytest.approx(y.sum() / n.sum())  # the request-level rate, unchanged
    assert est.variance == pytest.approx(boot, rel=0.10)
    # Counting every thumb as independent understates it: the reason for this module.
    naive = est.ratio * (1 - est.ratio) / n.sum()
    assert naive < 0.8 * boot


def test_with_one_rating_per_user_it_is_the_binomial_variance() -> None:
    per_user = [(1, 1)] * 30 + [(0, 1)] * 70
    est = ratio_by_units(per_user)
    assert est.ratio == pytest.approx(0.3)
    assert est.variance == pytest.approx(0.3 * 0.7 / 99)  # s^2 / k with the k - 1 sample variance


def test_users_without_ratings_and_tiny_groups() -> None:
    assert ratio_by_units([]).ratio is None
    one = ratio_by_units([(2, 3), (5, 0)])
    assert (one.users, one.ratio, one.variance) == (1, pytest.approx(2 / 3), None)
    diff = ratio_difference(one, ratio_by_units([(1, 1), (0, 1)]))
    assert diff["absolute"] == pytest.approx(0.5 - 2 / 3) and diff["p_value"] is None


def test_aa_experiments_peeked_every_50_users_keep_the_false_positive_rate() -> None:
    sim = simulate_experiments(experiments=1000, users=1000, peek_every=50, effect=0.0, seed=0)
    alpha = sim["alpha"]
    print(f"\nA/A, 1,000 experiments, 20 peeks: sequential {sim['sequential_any_peek']:.3f}, "
          f"fixed-horizon read at every peek {sim['fixed_any_peek']:.3f}, read once at the end "
          f"{sim['fixed_final_only']:.3f}, request-level {sim['request_level_any_peek']:.3f}")
    assert sim["sequential_any_peek"] <= alpha
    assert all(a <= b for a, b in zip(sim["sequential_rejected_by_peek"],
                                      sim["sequential_rejected_by_peek"][1:], strict=False))
    # The contrast: the same data, a fixed-horizon test read at every peek.
    assert sim["fixed_any_peek"] > 3 * alpha
    assert sim["fixed_final_only"] <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / 1000)
    assert sim["request_level_any_peek"] > sim["fixed_any_peek"]


def test_power_on_a_true_effect_is_reported() -> None:
    sim = simulate_experiments(experiments=1000, users=1000, peek_every=50, effect=0.08, seed=1)
    print(f"\n+8 points on 60%, 1,000 users: sequential power {sim['sequential_any_peek']:.3f} "
          f"(fixed-horizon at the end {sim['fixed_final_only']:.3f})")
    assert sim["sequential_any_peek"] >= 0.6
    assert sim["sequential_any_peek"] <= sim["fixed_any_peek"]  # validity under peeking costs power


def test_the_confidence_sequence_excludes_zero_exactly_when_p_is_below_alpha() -> None:
    rng = np.random.default_rng(3)
    for estimate, variance in zip(rng.normal(0, 0.05, 2000), rng.uniform(1e-5, 1e-3, 2000), strict=True):
        res = sequential_test(float(estimate), float(variance), tau=0.1, min_effect=0.02)
        lo, hi = res.cs
        assert (res.p_value <= 0.05) == (lo > 0 or hi < 0)
        assert lo < estimate < hi


@pytest.mark.parametrize("estimate,variance,decision", [
    (0.10, 0.0004, "variant-wins"),
    (-0.10, 0.0004, "control-wins"),
    (0.001, 1e-6, "no-difference"),  # the whole sequence inside +/- 0.02
    (0.03, 0.0004, "keep-running"),
])
def test_decisions(estimate: float, variance: float, decision: str) -> None:
    res = sequential_test(estimate, variance, tau=0.1, min_effect=0.02)
    assert res.decision == decision
    assert res.mde == pytest.approx((1.959964 + 0.841621) * math.sqrt(variance), rel=1e-5)
    assert sequential_test(estimate, 0.0, tau=0.1, min_effect=0.02) is None
