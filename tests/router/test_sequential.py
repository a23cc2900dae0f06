"""Per-user statistics and the sequential test, checked against references and simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from router.sequential import sequential_test
from router.sequential_path import MIN_USERS, replay
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


def test_reading_after_every_user_needs_the_minimum_users_per_arm() -> None:
    """The plug-in variance of a few users is noisy: with no minimum, an A/A experiment read
    after every user finds a winner far more often than alpha."""
    args = dict(experiments=1000, users=300, peek_every=1, effect=0.0, seed=4)
    bare = simulate_experiments(**args, min_users=2)
    guarded = simulate_experiments(**args, min_users=MIN_USERS)
    print(f"\nA/A read after every user: {bare['sequential_any_peek']:.3f} with no minimum, "
          f"{guarded['sequential_any_peek']:.3f} from {MIN_USERS} users per arm")
    assert bare["sequential_any_peek"] > 2 * bare["alpha"]
    assert guarded["sequential_any_peek"] <= guarded["alpha"]


def _ratings(rng, users: int, rates: dict[str, float]) -> list[tuple[str, str, int, float]]:
    out, rid = [], 0
    for u in range(users):
        arm = list(rates)[u % len(rates)]
        for _ in range(int(rng.integers(1, 4))):
            rid += 1
            out.append((arm, f"u{u}", rid, float(rng.random() < rates[arm])))
    return out


def test_replay_ends_on_the_same_estimates_as_the_totals() -> None:
    rng = np.random.default_rng(5)
    ratings = _ratings(rng, 120, {"c": 0.5, "v": 0.7})
    arm, who, rid, value = ratings[1]
    ratings.append((arm, who, rid, 1.0 - value))  # a changed thumb: the latest counts
    latest = {rid: (arm, who, value) for arm, who, rid, value in ratings}
    per_user: dict = {}
    for arm, who, value in latest.values():
        y, n = per_user.get((arm, who), (0.0, 0.0))
        per_user[(arm, who)] = (y + value, n + 1)
    estimates, _ = replay(ratings, "c", ["v"], tau=0.1, alpha=0.05)
    for arm in ("c", "v"):
        want = ratio_by_units([yn for (a, _), yn in per_user.items() if a == arm])
        assert estimates[arm].users == want.users
        assert estimates[arm].ratio == pytest.approx(want.ratio)
        assert estimates[arm].variance == pytest.approx(want.variance)


def test_a_decision_once_made_stays_made() -> None:
    """Decided at some look, then ratings that push the latest look's p above alpha: the
    always-valid p-value is the minimum over looks, so the decision holds."""
    ratings, rid = [], 0
    for u in range(2 * MIN_USERS + 4):
        arm = "v" if u % 2 else "c"
        rid += 1
        ratings.append((arm, f"u{u}", rid, 1.0 if arm == "v" or u % 7 == 3 else 0.0))
    _, tests = replay(ratings, "c", ["v"], tau=0.1, alpha=0.05)
    assert tests["v"].decision(alpha=0.05, min_effect=0.02) == "variant-wins"
    decided_p = tests["v"].p_value
    # Late contrary ratings: enough to move the current look's p-value above alpha.
    for u in range(200, 212):
        rid += 1
        ratings.append(("c" if u % 2 else "v", f"u{u}", rid, 1.0 if u % 2 else 0.0))
    estimates, tests = replay(ratings, "c", ["v"], tau=0.1, alpha=0.05)
    now = sequential_test(estimates["v"].ratio - estimates["c"].ratio,
                          estimates["v"].variance + estimates["c"].variance,
                          tau=0.1, min_effect=0.02)
    assert now.decision == "keep-running"  # the latest look alone has lost it
    assert tests["v"].p_value == decided_p
    assert tests["v"].decision(alpha=0.05, min_effect=0.02) == "variant-wins"
    assert tests["v"].cs[0] > 0


def test_no_look_counts_before_the_minimum_users() -> None:
    ratings = [("v" if u % 2 else "c", f"u{u}", u, float(u % 3 == 0))
               for u in range(2 * MIN_USERS - 2)]
    _, tests = replay(ratings, "c", ["v"], tau=0.1, alpha=0.05)
    assert tests["v"].looks == 0
    assert tests["v"].decision(alpha=0.05, min_effect=0.02) == "keep-running"
    ratings.append(("c", "late", 999, 0.0))
    ratings.append(("v", "late2", 1000, 1.0))
    _, tests = replay(ratings, "c", ["v"], tau=0.1, alpha=0.05)
    assert tests["v"].looks >= 1
