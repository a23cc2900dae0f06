from __future__ import annotations

import time
import uuid

import pytest

from router import (
    ExperimentConflict,
    ExperimentNotFound,
    InvalidExperiment,
    RequestRecord,
    Router,
)


def test_create_pins_refs_and_starts_a_draft(router: Router):
    exp = router.create(alias="bot", variants=[("support", 1), ("support@1", 1)])
    assert exp.name == "bot" and exp.status == "draft"
    assert [v.ref for v in exp.variants] == ["support@3", "support@1"]  # latest pinned
    assert exp.control == "support@3"
    assert router.route("bot", "u1") is None  # drafts are not served
    assert router.aliases() == []


def test_bad_definitions_are_refused_with_reasons(router: Router):
    with pytest.raises(InvalidExperiment, match="no adapter nope@1"):
        router.create(alias="bot", variants=[("support@1", 1), ("nope@1", 1)])
    with pytest.raises(InvalidExperiment, match="at least two"):
        router.create(alias="bot", variants=[("support@1", 1)])
    with pytest.raises(InvalidExperiment, match="repeat"):
        router.create(alias="bot", variants=[("support@1", 1), ("support@1", 2)])
    with pytest.raises(InvalidExperiment, match="positive sum"):
        router.create(alias="bot", variants=[("support@1", 0), ("support@2", 0)])
    with pytest.raises(InvalidExperiment, match="already an adapter name"):
        router.create(alias="support", variants=[("support@1", 1), ("support@2", 1)])
    with pytest.raises(InvalidExperiment, match="base model"):
        router.create(alias="loraswap-base", variants=[("support@1", 1), ("base", 1)])
    with pytest.raises(InvalidExperiment, match="control"):
        router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)],
                      control="other@1")
    with pytest.raises(InvalidExperiment, match="alias"):
        router.create(alias="a/b", variants=[("support@1", 1), ("support@2", 1)])
    assert router.list() == []


def test_base_variant_routes_to_the_base_id(router: Router):
    router.create(alias="bot", variants=[("base", 1), ("support@2", 0)], salt="s")
    router.start("bot")
    route = router.route("bot", "u1")
    assert (route.variant, route.target, route.is_base) == ("base", "loraswap-base", True)
    assert (route.experiment, route.variant) == ("bot", "base")


def test_life_cycle_and_one_active_experiment_per_alias(router: Router):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)])
    second = router.create(alias="bot", variants=[("support@2", 1), ("support@3", 1)])
    assert second.name == "bot-2"
    router.start("bot")
    assert router.aliases() == ["bot"]
    with pytest.raises(ExperimentConflict, match="already has an active experiment"):
        router.start("bot-2")
    paused = router.pause("bot")
    assert paused.status == "paused"
    route = router.route("bot", "anyone")
    assert route.variant == "support@1" and not route.exposed and route.bucket is None
    with pytest.raises(ExperimentConflict, match="already has an active"):
        router.start("bot-2")  # paused still holds the alias
    resumed = router.start("bot")
    assert resumed.status == "running" and resumed.started_at == paused.started_at
    router.stop("bot")
    # The alias outlives the experiment: it serves its pointer, set to the control at start.
    after = router.route("bot", "u")
    assert (after.experiment, after.target, after.exposed) == (None, "support@1", False)
    assert router.aliases() == ["bot"]
    assert router.route("support", "u") is None  # not an alias: served as asked
    with pytest.raises(ExperimentConflict, match="it is stopped"):
        router.start("bot")
    assert router.start("bot-2").status == "running"
    with pytest.raises(ExperimentNotFound):
        router.start("nope")


def test_assignment_is_sticky_and_follows_weights(router: Router):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 3)], salt="fixed")
    router.start("bot")
    first = {f"u{i}": router.route("bot", f"u{i}").variant for i in range(2000)}
    again = {f"u{i}": router.route("bot", f"u{i}").variant for i in range(2000)}
    assert first == again
    share = sum(v == "support@2" for v in first.values()) / len(first)
    assert 0.72 < share < 0.78
    anonymous = {router.route("bot", None).variant for _ in range(200)}
    assert anonymous == {"support@1", "support@2"}  # each request its own unit


def test_weight_change_switches_only_moved_units(router: Router):
    router.create(alias="bot", variants=[("support@1", 50), ("support@2", 50)], salt="x")
    router.start("bot")
    before = {f"u{i}": router.route("bot", f"u{i}") for i in range(3000)}
    exp = router.set_weights("bot", [("support@2", 30), ("support@1", 70)])
    assert [(v.ref, v.weight) for v in exp.variants] == [("support@1", 70), ("support@2", 30)]
    assert exp.weights_changed_at is not None
    for unit, old in before.items():
        new = router.route("bot", unit)
        if 5000 <= old.bucket < 7000:
            assert (old.variant, new.variant) == ("support@2", "support@1")
        else:
            assert new.variant == old.variant
    with pytest.raises(InvalidExperiment, match="exactly the variants"):
        router.set_weights("bot", [("support@1", 1), ("support@3", 1)])


def test_delete_guard_refuses_adapters_of_active_experiments(router: Router, registry):
    assert router.delete_guard in registry.guards
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)])
    registry.delete("support@1")  # a draft does not hold its adapters
    router.start("bot")
    with pytest.raises(PermissionError, match="variant of experiment bot \\(running\\)"):
        registry.delete("support@2")
    router.pause("bot")
    with pytest.raises(PermissionError, match="paused"):
        registry.delete("support@2")
    router.stop("bot")
    registry.delete("support@2")
    assert registry.deleted == ["support@1", "support@2"]


def test_start_rechecks_that_adapters_still_exist(router: Router, registry):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)])
    del registry.versions["support@2"]
    with pytest.raises(InvalidExperiment, match="support@2"):
        router.start("bot")


def test_delete_experiment_only_without_data(router: Router):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)])
    router.start("bot")
    with pytest.raises(ExperimentConflict, match="stop it first"):
        router.delete("bot")
    route = router.route("bot", "u")
    router.log_request(RequestRecord(request_id=f"req_{uuid.uuid4().hex}", model="bot",
                                     served=route.target, route=route))
    router.flush()
    router.stop("bot")
    with pytest.raises(ExperimentConflict, match="logged requests"):
        router.delete("bot")
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)], name="draft")
    router.delete("draft")
    assert [e.name for e in router.list()] == ["bot"]


def test_changes_from_another_process_are_seen_after_a_refresh(tmp_path, registry):
    server_side = Router(tmp_path / "db.sqlite", registry)
    cli_side = Router(tmp_path / "db.sqlite", registry)
    try:
        assert server_side.route("bot", "u") is None
        cli_side.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)])
        cli_side.start("bot")
        assert server_side.route("bot", "u") is None  # route() reads memory only
        server_side.refresh()  # what the server's reconcile loop does every interval
        assert server_side.route("bot", "u").experiment == "bot"
        cli_side.stop("bot")
        assert server_side.route("bot", "u").experiment == "bot"  # until the next refresh
        server_side.refresh()
        assert server_side.route("bot", "u").experiment is None  # the pointer serves
    finally:
        server_side.close()
        cli_side.close()


def test_routing_overhead_is_well_under_a_millisecond(router: Router):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)])
    router.start("bot")
    samples = []
    for i in range(5000):
        t = time.perf_counter()
        router.route("bot", f"user-{i % 300}")
        samples.append(time.perf_counter() - t)
    samples.sort()
    p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99)]
    print(f"route(): p50 {p50 * 1e6:.1f} us, p99 {p99 * 1e6:.1f} us")
    assert p50 < 100e-6 and p99 < 1e-3


def test_log_request_does_not_block(router: Router):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)])
    router.start("bot")
    route = router.route("bot", "u")
    start = time.perf_counter()
    for _ in range(2000):
        router.log_request(RequestRecord(request_id=f"req_{uuid.uuid4().hex}", model="bot",
                                         served=route.target, route=route))
    per_call = (time.perf_counter() - start) / 2000
    assert per_call < 100e-6
    router.flush()
    assert router.results("bot")["variants"][[v.ref for v in router.get("bot").variants]
                                             .index(route.variant)]["requests"] == 2000


def test_unrouted_requests_are_logged_only_with_log_all(tmp_path, registry):
    quiet = Router(tmp_path / "a.db", registry)
    loud = Router(tmp_path / "b.db", registry, log_all=True, retention=True)
    try:
        record = RequestRecord(request_id="r1", model="support@1", served="support@1",
                               prompt=[{"role": "user", "content": "hi"}], output="yo")
        assert quiet.log_request(record) is False
        assert loud.log_request(record) is True
        loud.flush()
        row = loud._db.execute("SELECT experiment_id, prompt, output FROM requests").fetchone()
        assert row == (None, '[{"role": "user", "content": "hi"}]', "yo")
    finally:
        quiet.close()
        loud.close()


def test_retention_is_off_by_default_and_per_experiment(router: Router):
    router.create(alias="keep", variants=[("support@1", 1), ("support@2", 1)], retention=True)
    router.create(alias="drop", variants=[("other@1", 1), ("support@3", 1)])
    router.start("keep")
    router.start("drop")
    for alias in ("keep", "drop"):
        route = router.route(alias, "u")
        router.log_request(RequestRecord(
            request_id=alias, model=alias, served=route.target, route=route,
            prompt=[{"role": "user", "content": "secret"}], output="answer"))
    router.flush()
    rows = dict(router._db.execute("SELECT id, output FROM requests").fetchall())
    assert rows == {"keep": "answer", "drop": None}
