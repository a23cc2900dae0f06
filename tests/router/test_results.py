"""Results recomputed independently (numpy/scipy) from the raw data sent, to 1e-6."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from scipy import integrate, stats

from router import FeedbackIn, RequestRecord, Router


def _send(router: Router, alias: str, variant: str, n: int, unit_prefix: str, rng, **extra):
    """Log n requests forced onto `variant` (as a misbehaving assigner would)."""
    base = router.route(alias, "someone")
    ids = []
    for i in range(n):
        route = dataclasses.replace(base, variant=variant, target=variant,
                                    unit=f"{unit_prefix}{i}")
        rid = f"{unit_prefix}{i}"
        router.log_request(RequestRecord(
            request_id=rid, model=alias, served=variant, route=route, user=route.unit,
            latency_ms=rng.uniform(5, 50), prompt_tokens=rng.randint(3, 9),
            completion_tokens=rng.randint(5, 30), finish_reason="stop", **extra))
        ids.append(rid)
    return ids


def test_thumbs_results_match_scipy(router: Router):
    rng = random.Random(1)
    router.create(alias="bot", variants=[("support@1", 50), ("support@2", 50)])
    router.start("bot")
    a = _send(router, "bot", "support@1", 140, "a", rng)
    b = _send(router, "bot", "support@2", 60, "b", rng)  # 70/30 against 50/50
    for ids, p in ((a, 0.55), (b, 0.7)):
        for rid in ids[:100]:
            up = rng.random() < p
            router.record_feedback(FeedbackIn(request_id=rid, thumb="up" if up else "down"))
    # a change of mind: only the latest thumb counts
    router.record_feedback(FeedbackIn(request_id=b[0], thumb="down"))
    router.record_feedback(FeedbackIn(request_id=b[0], thumb="up"))
    router.record_feedback(FeedbackIn(request_id=b[1], comment="x", label="meh"))
    res = router.results("bot")
    control, variant = res["variants"]
    assert (control["requests"], variant["requests"]) == (140, 60)
    assert (control["users"], variant["users"]) == (140, 60)
    assert control["feedback"] == 100 and variant["feedback"] == 63
    assert variant["requests_with_feedback"] == 60
    assert variant["feedback_rate"] == pytest.approx(60 / 60)
    # recompute from what the database holds as the latest thumb per request
    latest = {}
    for rid, value in router._db.execute(
            "SELECT request_id, value FROM feedback WHERE kind = 'thumb' ORDER BY id"):
        latest[rid] = value
    k1 = int(sum(v for r, v in latest.items() if r.startswith("a")))
    n1 = sum(1 for r in latest if r.startswith("a"))
    k2 = int(sum(v for r, v in latest.items() if r.startswith("b")))
    n2 = sum(1 for r in latest if r.startswith("b"))
    assert (control["thumbs"]["n"], variant["thumbs"]["n"]) == (n1, n2) == (100, 60)
    assert (control["thumbs"]["positive"], variant["thumbs"]["positive"]) == (k1, k2)
    for stat, k, m in ((control, k1, n1), (variant, k2, n2)):
        ci = stats.binomtest(k, m).proportion_ci(method="wilson")
        assert stat["thumbs"]["rate"] == pytest.approx(k / m, abs=1e-6)
        assert stat["thumbs"]["ci95"] == pytest.approx([ci.low, ci.high], abs=1e-6)
    lift = variant["lift"]
    p1, p2 = k1 / n1, k2 / n2
    pooled = (k1 + k2) / (n1 + n2)
    z = (p2 - p1) / np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    se = np.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    assert lift["absolute"] == pytest.approx(p2 - p1, abs=1e-6)
    assert lift["relative"] == pytest.approx((p2 - p1) / p1, abs=1e-6)
    assert lift["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)), abs=1e-6)
    assert lift["absolute_ci95"] == pytest.approx([p2 - p1 - 1.959963984540054 * se,
                                                   p2 - p1 + 1.959963984540054 * se], abs=1e-6)
    bc, bv = stats.beta(1 + k1, 1 + n1 - k1), stats.beta(1 + k2, 1 + n2 - k2)
    win, _ = integrate.quad(lambda x: bv.pdf(x) * bc.cdf(x), 0, 1, epsabs=1e-12, limit=500)
    assert lift["chance_to_win"] == pytest.approx(win, abs=1e-6)
    assert control["lift"] is None
    # 140 vs 60 units against 50/50: the SRM check flags it
    srm = res["srm"]
    ref = stats.chisquare([140, 60])
    assert srm["units"] == {"support@1": 140, "support@2": 60}
    assert srm["chi2"] == pytest.approx(ref.statistic, abs=1e-6)
    assert srm["p_value"] == pytest.approx(ref.pvalue, abs=1e-6)
    assert srm["flagged"] is True
    lat = [r[0] for r in router._db.execute(
        "SELECT latency_ms FROM requests WHERE variant = 'support@1'")]
    assert control["latency_ms"]["p50"] == pytest.approx(np.quantile(lat, 0.5), abs=1e-6)
    assert control["latency_ms"]["p95"] == pytest.approx(np.quantile(lat, 0.95), abs=1e-6)
    toks = router._db.execute("SELECT SUM(prompt_tokens), SUM(completion_tokens) FROM requests "
                              "WHERE variant = 'support@1'").fetchone()
    assert (control["tokens"]["prompt"], control["tokens"]["completion"]) == toks
    assert sum(p["n"] for p in [res["series"]["variants"]["support@2"][-1]]) == 60


def test_score_results_match_scipy(router: Router):
    rng = random.Random(2)
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)], metric="score",
                  score_min=1, score_max=5)
    router.start("bot")
    a = _send(router, "bot", "support@1", 50, "a", rng)
    b = _send(router, "bot", "support@2", 45, "b", rng)
    sa = [rng.choice([1, 2, 3, 4, 5]) for _ in a[:40]]
    sb = [rng.choice([2, 3, 4, 5, 5]) for _ in b[:35]]
    for ids, scores in ((a, sa), (b, sb)):
        for rid, s in zip(ids, scores, strict=False):
            router.record_feedback(FeedbackIn(request_id=rid, score=s))
    res = router.results("bot")
    control, variant = res["variants"]
    for stat, xs in ((control, sa), (variant, sb)):
        m, sd = np.mean(xs), np.std(xs, ddof=1)
        lo, hi = stats.t.interval(0.95, len(xs) - 1, loc=m, scale=sd / np.sqrt(len(xs)))
        assert stat["score"]["mean"] == pytest.approx(m, abs=1e-6)
        assert stat["score"]["sd"] == pytest.approx(sd, abs=1e-6)
        assert stat["score"]["ci95"] == pytest.approx([lo, hi], abs=1e-6)
    ref = stats.ttest_ind(sb, sa, equal_var=False)
    assert variant["lift"]["p_value"] == pytest.approx(ref.pvalue, abs=1e-6)
    assert variant["lift"]["t"] == pytest.approx(ref.statistic, abs=1e-6)
    assert variant["lift"]["absolute"] == pytest.approx(np.mean(sb) - np.mean(sa), abs=1e-6)
    assert res["srm"]["flagged"] is False


def test_paused_requests_are_not_counted(router: Router, routed):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)])
    router.start("bot")
    routed(router, "bot", range(10))
    router.pause("bot")
    routed(router, "bot", range(10, 15))
    res = router.results("bot")
    assert sum(v["requests"] for v in res["variants"]) == 10


def test_per_user_statistics_count_users_not_requests(router: Router):
    """12 users per variant, 20 rated requests each, users differing in taste: the per-user
    interval is recomputed here with numpy and is wider than the request-level one."""
    rng = random.Random(7)
    router.create(alias="bot", variants=[("support@1", 50), ("support@2", 50)])
    router.start("bot")
    base = router.route("bot", "someone")
    raw: dict[str, list[tuple[int, int]]] = {}
    for variant, offset in (("support@1", 0.0), ("support@2", 0.1)):
        raw[variant] = []
        for u in range(12):
            taste = min(0.95, max(0.05, rng.uniform(0.2, 0.8) + offset))
            ups = 0
            for i in range(20):
                route = dataclasses.replace(base, variant=variant, target=variant, unit=f"{variant}-u{u}")
                rid = f"{variant}-u{u}-{i}"
                router.log_request(RequestRecord(request_id=rid, model="bot", served=variant,
                                                 route=route, user=route.unit, latency_ms=10.0))
                up = rng.random() < taste
                ups += up
                router.record_feedback(FeedbackIn(request_id=rid, thumb="up" if up else "down"))
            raw[variant].append((ups, 20))
    res = router.results("bot")
    control, variant = res["variants"]
    for row in (control, variant):
        data = np.array(raw[row["variant"]], dtype=float)
        y, n = data[:, 0], data[:, 1]
        r = y.sum() / n.sum()
        cov = np.cov(y, n, ddof=1)
        var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (len(y) * n.mean() ** 2)
        assert row["users"] == 12 and row["per_user"]["users"] == 12
        assert row["per_user"]["ratings"] == 240
        assert row["per_user"]["value"] == pytest.approx(row["thumbs"]["rate"], abs=1e-9)
        assert row["per_user"]["se"] == pytest.approx(np.sqrt(var), rel=1e-6)
        request_half = (row["thumbs"]["ci95"][1] - row["thumbs"]["ci95"][0]) / 2
        per_user_half = (row["per_user"]["ci95"][1] - row["per_user"]["ci95"][0]) / 2
        assert per_user_half > request_half
    lift = variant["per_user_lift"]
    assert lift["absolute"] == pytest.approx(variant["per_user"]["value"] - control["per_user"]["value"])
    seq = lift["sequential"]
    lo, hi = seq["confidence_sequence"]
    assert lo < lift["absolute"] < hi
    assert (seq["p_value"] <= 0.05) == (lo > 0 or hi < 0)
    assert res["decisions"] == {"support@2": lift["decision"]} and lift["decision"] == seq["decision"]
    assert control["per_user_lift"] is None
