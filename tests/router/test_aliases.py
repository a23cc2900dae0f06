"""Aliases as pointers with history: set, roll back, promote (by hand and by the sequential
test), the archive guard, and prompt variants."""

from __future__ import annotations

import random

import pytest

from router import (
    AliasConflict,
    ExperimentConflict,
    FeedbackIn,
    InvalidAlias,
    InvalidExperiment,
    RequestRecord,
    Router,
)


def _serve(router: Router, alias: str, users: range, good: str, rates=(0.8, 0.3), seed=7) -> None:
    """One request per user through the alias, and a thumb: up with `rates[0]` on the
    variant `good`, `rates[1]` elsewhere (users judge noisily)."""
    rng = random.Random(seed)
    for i in users:
        route = router.route(alias, f"u{i}")
        router.log_request(RequestRecord(request_id=f"r{alias}{i}", model=alias,
                                         served=route.target, route=route))
        p = rates[0] if route.variant == good else rates[1]
        router.record_feedback(FeedbackIn(request_id=f"r{alias}{i}",
                                          thumb="up" if rng.random() < p else "down"))


def test_a_pointer_is_pinned_and_every_change_is_in_the_history(router: Router):
    alias = router.set_alias("helpdesk", "support", key_id="k1")
    assert (alias.target, alias.revision) == ("support@3", 1)  # the latest, pinned now
    route = router.route("helpdesk", "u1")
    assert (route.target, route.experiment, route.exposed) == ("support@3", None, False)
    assert "helpdesk" in router.aliases()
    router.set_alias("helpdesk", "support@1", reason="support@3 misbehaves", key_id="k2")
    assert router.route("helpdesk", "u1").target == "support@1"
    back = router.rollback_alias("helpdesk", key_id="k3")
    assert (back.target, back.revision) == ("support@3", 3)
    history = router.alias_history("helpdesk")
    assert [(h["kind"], h["from"], h["to"], h["by"]) for h in history] == [
        ("set", None, "support@3", "k1"),
        ("set", "support@3", "support@1", "k2"),
        ("rollback", "support@1", "support@3", "k3")]
    assert history[1]["reason"] == "support@3 misbehaves"
    assert "to revision 1" in history[2]["reason"]


def test_alias_writes_that_cannot_be_are_refused_and_change_nothing(router: Router):
    with pytest.raises(InvalidAlias, match="already an adapter name"):
        router.set_alias("support", "support@1")
    with pytest.raises(InvalidAlias, match="base model"):
        router.set_alias("loraswap-base", "support@1")
    with pytest.raises(InvalidAlias, match="gone@1"):
        router.set_alias("helpdesk", "gone@1")
    with pytest.raises(InvalidAlias, match="must match"):
        router.set_alias("a/b", "support@1")
    assert router.list_aliases() == []
    router.set_alias("helpdesk", "support@1")
    with pytest.raises(AliasConflict, match="no earlier revision"):
        router.rollback_alias("helpdesk")
    assert router.get_alias("helpdesk").revision == 1


def test_an_experiment_gives_its_alias_a_pointer_and_stopping_it_keeps_serving(router: Router):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)])
    router.start("bot", key_id="k1")
    router.stop("bot")
    assert router.route("bot", "anyone").target == "support@1"  # the control, not a 404
    history = router.alias_history("bot")
    assert [(h["kind"], h["from"], h["to"]) for h in history] == [
        ("set", None, "support@1"), ("experiment-start", "support@1", "experiment:bot"),
        ("experiment-stop", "experiment:bot", "support@1")]
    assert history[0]["by"] == "k1"


def test_promotion_by_hand_needs_a_decision_or_a_named_variant(router: Router):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)], salt="s")
    router.start("bot")
    _serve(router, "bot", range(10), good="support@2")
    with pytest.raises(ExperimentConflict, match="has not decided"):
        router.promote("bot")
    with pytest.raises(InvalidExperiment, match="not a variant"):
        router.promote("bot", "support@3")
    exp = router.promote("bot", "support@2", key_id="k9")
    assert exp.status == "stopped"
    assert router.route("bot", "u1").target == "support@2"
    last = router.alias_history("bot")[-1]
    assert (last["kind"], last["from"], last["to"], last["by"]) == (
        "promote", "experiment:bot", "support@2", "k9")


def test_auto_promote_ends_the_experiment_once_the_sequential_test_decides(router: Router):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)], salt="s",
                  auto_promote=True)
    router.start("bot")
    _serve(router, "bot", range(20), good="support@2")
    assert router.check_decisions(now=1e12) == []  # 20 users: keep running
    assert router.get("bot").status == "running"
    _serve(router, "bot", range(20, 400), good="support@2")
    assert router.check_decisions(now=1e12 + 10) == [("bot", "support@2")]
    assert router.get("bot").status == "stopped"
    assert router.route("bot", "u1").target == "support@2"
    last = router.alias_history("bot")[-1]
    assert last["kind"] == "promote" and "automatically" in last["reason"]
    assert "variant-wins" in last["reason"]


def test_auto_promote_keeps_the_control_when_it_wins(router: Router):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)], salt="s",
                  auto_promote=True)
    router.start("bot")
    _serve(router, "bot", range(400), good="support@1")
    assert router.check_decisions(now=1e12) == [("bot", "support@1")]
    assert "control-wins" in router.alias_history("bot")[-1]["reason"]


def test_a_version_an_alias_serves_cannot_be_archived(router: Router, registry):
    router.set_alias("helpdesk", "support@3")
    router.set_rules("helpdesk", [{"name": "vip", "when": {"users": ["vip"]},
                                   "target": "support@2"}])
    for ref in ("support@3", "support@2"):
        with pytest.raises(PermissionError, match="alias helpdesk serves it"):
            registry.delete(ref)
    registry.delete("support@1")
    assert registry.deleted == ["support@1"]


def test_prompt_variants_route_with_their_system_prompt(router: Router):
    exp = router.create(alias="tone", salt="s", variants=[
        ("base", 1), ("base", 1, "base+concise", "Answer in one word."),
        ("support@1", 1, None, "Be kind.")])
    assert [v.ref for v in exp.variants] == ["base", "base+concise", "support-v1+prompt"]
    assert exp.variant("support-v1+prompt").serves == "support@1"
    router.start("tone")
    seen = {}
    for i in range(60):
        route = router.route("tone", f"u{i}")
        seen[route.variant] = (route.target, route.system_prompt)
    assert seen == {"base": ("loraswap-base", None),
                    "base+concise": ("loraswap-base", "Answer in one word."),
                    "support-v1+prompt": ("support@1", "Be kind.")}
    router.set_weights("tone", [("base", 1), ("base+concise", 0), ("support-v1+prompt", 1)])
    with pytest.raises(InvalidExperiment, match="repeat"):
        router.create(alias="t2", variants=[("base", 1, "x", "a"), ("support@1", 1, "x", "b")])
    with pytest.raises(InvalidExperiment, match="only for a prompt variant"):
        router.create(alias="t2", variants=[("base", 1, "x", None), ("support@1", 1)])
    exp = router.promote("tone", "support-v1+prompt")
    alias = router.get_alias("tone")
    assert (alias.target, alias.system_prompt) == ("support@1", "Be kind.")
    assert router.route("tone", "u").system_prompt == "Be kind."


def test_a_running_prompt_variant_holds_its_version(router: Router, registry):
    router.create(alias="tone", variants=[("base", 1), ("support@2", 1, "kind", "Be kind.")])
    router.start("tone")
    with pytest.raises(PermissionError, match="variant of experiment tone"):
        registry.delete("support@2")


def test_an_alias_with_an_experiment_cannot_be_deleted(router: Router):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)])
    router.start("bot")
    with pytest.raises(AliasConflict, match="active experiment"):
        router.delete_alias("bot")
    router.stop("bot")
    router.delete_alias("bot")
    assert router.route("bot", "u") is None
    assert router.alias_history("bot")[-1]["kind"] == "delete"
