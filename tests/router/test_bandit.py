"""Bandit experiments: Thompson sampling on a simulated two-arm problem, users kept in place."""

from __future__ import annotations

import random

import pytest

from router import FeedbackIn, InvalidExperiment, RequestRecord, Router
from router.bandit import thompson_weights

RATES = {"support@1": 0.3, "support@2": 0.5}


def test_most_late_traffic_goes_to_the_better_arm_and_no_user_moves(router: Router):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)], mode="bandit",
                  min_share=0.05, bandit_interval_s=3600)
    router.start("bot")
    rng = random.Random(11)
    first: dict[str, str] = {}
    served: list[str] = []
    for i in range(2000):
        returning = first and rng.random() < 0.2
        unit = rng.choice(sorted(first)) if returning else f"user{i}"
        route = router.route("bot", unit)
        assert first.setdefault(unit, route.variant) == route.variant, f"{unit} moved"
        rid = f"r{i}"
        router.log_request(RequestRecord(request_id=rid, model="bot", served=route.variant,
                                         route=route, user=unit, latency_ms=5.0))
        up = rng.random() < RATES[route.variant]
        router.record_feedback(FeedbackIn(request_id=rid, thumb="up" if up else "down"))
        served.append(route.variant)
        if i % 100 == 99:
            assert router.update_bandits(force=True) == ["bot"]
            router.refresh()  # as the server's reconcile loop does: assignments survive it
    late = served[len(served) // 2:]
    share = late.count("support@2") / len(late)
    print(f"\nbandit: {share:.1%} of the last 1,000 requests went to the better arm; weights now "
          f"{[v.weight for v in router.get('bot').variants]}")
    assert share >= 0.8
    weights = {v.ref: v.weight for v in router.get("bot").variants}
    assert weights["support@1"] >= 0.05 * sum(weights.values()) - 1  # the exploration floor


def test_assignments_survive_a_restart(router: Router, tmp_path, registry):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)], mode="bandit")
    router.start("bot")
    before = {}
    for i in range(40):
        route = router.route("bot", f"u{i}")
        before[f"u{i}"] = route.variant
        router.log_request(RequestRecord(request_id=f"r{i}", model="bot", served=route.variant,
                                         route=route, user=f"u{i}", latency_ms=5.0))
    router.set_weights("bot", [("support@1", 0), ("support@2", 1)])  # every new user to @2
    router.flush()
    again = Router(router.db_path, registry, base_id="loraswap-base")
    try:
        assert {u: again.route("bot", u).variant for u in before} == before
        assert again.route("bot", "a-new-user").variant == "support@2"
    finally:
        again.close()


def test_thompson_weights_follow_the_evidence_with_a_floor():
    even, p_even = thompson_weights([(0, 0), (0, 0)], min_share=0.1)
    assert abs(p_even[0] - 0.5) < 0.02 and abs(even[0] - even[1]) < 400
    clear, p_clear = thompson_weights([(30, 70), (50, 50)], min_share=0.1)
    assert p_clear[1] > 0.99  # 50/100 against 30/100
    assert clear[0] >= 1000 and clear[1] > 8900  # the worse arm keeps its 10% floor, little more
    assert abs(sum(clear) - 10_000) <= 1


@pytest.mark.parametrize("options,param", [
    ({"mode": "bandit", "metric": "score"}, "metric"),
    ({"mode": "bandit", "min_share": 0.6}, "min_share"),
    ({"mode": "greedy"}, "mode"),
])
def test_bandit_options_are_checked(router: Router, options, param):
    with pytest.raises(InvalidExperiment) as caught:
        router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)], **options)
    assert caught.value.param == param


def test_another_process_learns_every_assignment_whatever_the_request_ids(router: Router, registry):
    """Request ids are random (req_<uuid>), so the log is read in insertion order."""
    import uuid

    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)], mode="bandit")
    router.start("bot")
    other = Router(router.db_path, registry, base_id="loraswap-base")
    try:
        seen = {}
        for batch in range(3):
            for i in range(30):
                unit = f"b{batch}u{i}"
                route = router.route("bot", unit)
                seen[unit] = route.variant
                router.log_request(RequestRecord(request_id=f"req_{uuid.uuid4().hex}", model="bot",
                                                 served=route.variant, route=route, user=unit))
            router.flush()
            other.refresh()
            other.set_weights("bot", [("support@1", 1), ("support@2", 0)] if batch % 2 else
                              [("support@1", 0), ("support@2", 1)])  # new users all one way
            assert {u: other.route("bot", u).variant for u in seen} == seen
            router.refresh()
    finally:
        other.close()


def test_two_processes_that_assigned_a_new_user_apart_settle_on_the_first_logged(
        router: Router, registry):
    """Two ingress replicas, each with a weighting the other has not read yet, both see a
    new user before either's log row is written: once both have read the log, both serve
    the variant of the user's first logged request."""
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)], mode="bandit")
    router.start("bot")
    other = Router(router.db_path, registry, base_id="loraswap-base")
    try:
        router.set_weights("bot", [("support@1", 1), ("support@2", 0)])  # all new users to @1
        other.set_weights("bot", [("support@1", 0), ("support@2", 1)])  # and here to @2
        first, second = router.route("bot", "newcomer"), other.route("bot", "newcomer")
        assert (first.variant, second.variant) == ("support@1", "support@2")
        for r, route, rid in ((router, first, "r1"), (other, second, "r2")):  # r1 first
            r.log_request(RequestRecord(request_id=rid, model="bot", served=route.variant,
                                        route=route, user="newcomer"))
            r.flush()
        router.refresh()
        other.refresh()
        assert {router.route("bot", "newcomer").variant,
                other.route("bot", "newcomer").variant} == {"support@1"}
    finally:
        other.close()
