"""Guardrails cut a breaching variant automatically; the alias keeps serving the others."""

from __future__ import annotations

import random

import pytest

from router import FeedbackIn, InvalidExperiment, RequestRecord, Router


def _request(router: Router, i: int, unit: str, *, status: int = 200, thumb: str | None = None,
             tokens: int = 10) -> str:
    route = router.route("bot", unit)
    rid = f"r{i}"
    router.log_request(RequestRecord(request_id=rid, model="bot", served=route.variant,
                                     route=route, user=unit, status_code=status, latency_ms=5.0,
                                     completion_tokens=tokens))
    if thumb:
        router.record_feedback(FeedbackIn(request_id=rid, thumb=thumb))
    return route.variant


def test_a_failing_variant_is_cut_within_min_requests_and_the_alias_keeps_serving(router, registry):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)],
                  guardrails={"error_rate": 0.2, "min_requests": 20})
    router.start("bot")
    served_bad = 0
    cut_at = None
    for i in range(400):
        variant = router.route("bot", f"u{i}").variant
        bad = variant == "support@2"
        served_bad += bad
        _request(router, i, f"u{i}", status=500 if bad else 200)  # @2 fails every request
        cuts = router.check_guardrails(force=True)
        if cuts:
            assert cuts == [("bot", "support@2", cuts[0][2])] and "error rate 1.000 > 0.2" in cuts[0][2]
            cut_at = served_bad
            break
    assert cut_at == 20, "cut as soon as min_requests of its requests were seen"
    assert {router.route("bot", f"new{i}").variant for i in range(200)} == {"support@1"}
    exp = router.get("bot")
    assert [v.weight for v in exp.variants] == [1, 0] and exp.status == "running"
    assert exp.cut[0][0] == "support@2" and "error rate" in exp.cut[0][1]
    again = Router(router.db_path, registry, base_id="loraswap-base")  # recorded, not in memory
    try:
        assert again.get("bot").cut == exp.cut
        assert again.check_guardrails(force=True) == []  # nothing left to cut
    finally:
        again.close()


def test_thumbs_down_cut_a_bandit_arm_whose_users_move_and_it_stays_cut(router):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)], mode="bandit",
                  guardrails={"negative_rate": 0.5, "min_requests": 10})
    router.start("bot")
    rng = random.Random(2)
    assigned = {}
    for i in range(60):
        unit = f"u{i % 30}"
        variant = router.route("bot", unit).variant
        assigned.setdefault(unit, variant)
        down = variant == "support@2" and rng.random() < 0.9
        _request(router, i, unit, thumb="down" if down else "up")
        router.check_guardrails(force=True)
        if router.get("bot").cut:
            break
    assert router.get("bot").cut and router.get("bot").cut[0][0] == "support@2"
    moved = [u for u, v in assigned.items() if v == "support@2"]
    assert moved and {router.route("bot", u).variant for u in moved} == {"support@1"}
    router.update_bandits(force=True)  # Thompson sampling must not revive it
    assert {v.ref: v.weight for v in router.get("bot").variants}["support@2"] == 0


def test_the_control_is_never_cut(router):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)],
                  guardrails={"tokens_per_request": 50, "min_requests": 5})
    router.start("bot")
    for i in range(40):
        _request(router, i, f"u{i}", tokens=500)  # both ramble
    cuts = router.check_guardrails(force=True)
    assert [(e, v) for e, v, _ in cuts] == [("bot", "support@2")]
    assert "mean completion tokens 500.0 > 50" in cuts[0][2]
    assert router.check_guardrails(force=True) == []


@pytest.mark.parametrize("spec,needle", [
    ({"error_rate": 1.5}, "at most 1.0"),
    ({"p99": 10}, "unknown guardrail 'p99'"),
    ({"latency_p95_ms": 0}, "positive number"),
    ({"latency_p95_ms": float("inf")}, "positive number"),
])
def test_guardrail_specs_are_checked(router, spec, needle):
    with pytest.raises(InvalidExperiment, match=needle) as caught:
        router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)], guardrails=spec)
    assert caught.value.param == "guardrails"
