"""The statistics against scipy (and numerical integration), to 1e-6."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from router import analysis as st


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (50, 100), (997, 1000), (10, 10), (1, 7)])
def test_wilson_matches_scipy(k, n):
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    lo, hi = st.wilson_interval(k, n)
    assert lo == pytest.approx(ci.low, abs=1e-9) and hi == pytest.approx(ci.high, abs=1e-9)


@pytest.mark.parametrize("k1,n1,k2,n2", [(40, 100, 55, 100), (300, 1000, 320, 1100), (5, 9, 1, 12)])
def test_two_proportion_z_by_hand(k1, n1, k2, n2):
    p = (k1 + k2) / (n1 + n2)
    z = (k2 / n2 - k1 / n1) / np.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    got_z, got_p = st.two_proportion_ztest(k1, n1, k2, n2)
    assert got_z == pytest.approx(z, abs=1e-9)
    assert got_p == pytest.approx(2 * stats.norm.sf(abs(z)), abs=1e-9)


@pytest.mark.parametrize("a", [(3.1, 1.2, 40, 3.6, 0.9, 35), (1.0, 0.5, 2, 4.0, 3.0, 3),
                               (2.0, 1.0, 500, 2.01, 1.1, 700)])
def test_welch_matches_scipy(a):
    t, df, p = st.welch_ttest(*a)
    ref = stats.ttest_ind_from_stats(a[3], a[4], a[5], a[0], a[1], a[2], equal_var=False)
    assert t == pytest.approx(ref.statistic, abs=1e-9)
    assert p == pytest.approx(ref.pvalue, abs=1e-9)
    lo, hi = st.welch_interval(*a)
    half = stats.t.ppf(0.975, df) * np.sqrt(a[1] ** 2 / a[2] + a[4] ** 2 / a[5])
    assert lo == pytest.approx(a[3] - a[0] - half, abs=1e-8)
    assert hi == pytest.approx(a[3] - a[0] + half, abs=1e-8)


@pytest.mark.parametrize("n", [2, 3, 12, 31, 1001])
def test_mean_interval_matches_scipy(n):
    lo, hi = st.mean_interval(3.2, 1.1, n)
    ref = stats.t.interval(0.95, n - 1, loc=3.2, scale=1.1 / np.sqrt(n))
    assert (lo, hi) == pytest.approx(ref, abs=1e-9)
    assert st.mean_interval(3.2, 1.1, 1) is None


@pytest.mark.parametrize("counts", [(30, 20, 40, 15), (0, 0, 0, 0), (5, 50, 9, 41),
                                    (400, 600, 430, 570), (2, 1, 0, 3)])
def test_chance_to_win_matches_numeric_integration(counts):
    pc, nc, pv, nv = counts
    control, variant = stats.beta(1 + pc, 1 + nc), stats.beta(1 + pv, 1 + nv)
    ref, _err = integrate.quad(lambda x: variant.pdf(x) * control.cdf(x), 0, 1,
                               epsabs=1e-12, limit=500, points=[control.mean(), variant.mean()])
    assert st.beta_chance_to_win(pc, nc, pv, nv) == pytest.approx(ref, abs=1e-6)


def test_chance_to_win_approximation_for_huge_counts():
    exact = st.beta_chance_to_win(40_000, 60_000, 40_500, 59_500)
    approx = st.beta_chance_to_win(40_000, 60_000, 40_500, 59_500, exact_limit=10)
    assert approx == pytest.approx(exact, abs=1e-4)


@pytest.mark.parametrize("obs,w", [([70, 30], [50, 50]), ([52, 48], [1, 1]),
                                   ([100, 210, 95], [1, 2, 1]), ([500, 480], [50, 50])])
def test_srm_matches_scipy_chisquare(obs, w):
    exp = np.array(w) / sum(w) * sum(obs)
    ref = stats.chisquare(obs, exp)
    chi2, df, p = st.srm_test(obs, w)
    assert chi2 == pytest.approx(ref.statistic, abs=1e-9) and df == len(obs) - 1
    assert p == pytest.approx(ref.pvalue, abs=1e-9)


def test_srm_flags_70_30_against_50_50_and_not_a_fair_split():
    assert st.srm_test([70, 30], [50, 50])[2] < st.SRM_THRESHOLD  # 100 units
    assert st.srm_test([52, 48], [50, 50])[2] > st.SRM_THRESHOLD
    assert st.srm_test([0, 0], [1, 1]) is None
