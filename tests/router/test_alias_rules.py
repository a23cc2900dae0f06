"""Routing rules: what each condition matches, first match wins, and what is refused."""

from __future__ import annotations

import pytest

from router import InvalidAlias, RouteContext, Router
from router.alias_rules import parse_rules
from router.assignment import bucket_of

RULES = [
    {"name": "acme", "when": {"header": {"X-Tenant": ["acme", "acme-eu"]}}, "target": "support@1"},
    {"name": "gold", "when": {"metadata": {"tier": "gold"}}, "target": "support@2"},
    {"name": "vips", "when": {"users": ["vip1", "vip2"]}, "target": "other@1"},
    {"name": "ops-key", "when": {"api_key": ["7"]}, "target": "base"},
    {"name": "translate", "when": {"prompt_regex": "(?i)^translate"}, "target": "base",
     "system_prompt": "You translate."},
    {"name": "both", "when": {"header": {"x-region": "eu"}, "metadata": {"tier": "free"}},
     "target": "support@2"},
    {"name": "half", "when": {"user_hash": [0, 0.5]}, "target": "support@1"},
]


def _low_and_high_users() -> tuple[str, str]:
    """A user in the first half of the alias's rule hash, and one in the second."""
    users = [f"user{i}" for i in range(100)]
    low = next(u for u in users if bucket_of("rule:helpdesk", u) < 5000)
    high = next(u for u in users if bucket_of("rule:helpdesk", u) >= 5000)
    return low, high


LOW, HIGH = _low_and_high_users()

# (what the request carries, unit) -> (rule that matches or None, target served)
TABLE = [
    (RouteContext(headers={"x-tenant": "acme"}), HIGH, ("acme", "support@1")),
    (RouteContext(headers={"x-tenant": "acme-eu"}), HIGH, ("acme", "support@1")),
    (RouteContext(headers={"x-tenant": "other"}), HIGH, (None, "support@3")),
    (RouteContext(metadata={"tier": "gold"}), HIGH, ("gold", "support@2")),
    (RouteContext(headers={"x-tenant": "acme"}, metadata={"tier": "gold"}), HIGH,
     ("acme", "support@1")),  # the first match wins
    (RouteContext(), "vip2", ("vips", "other@1")),
    (RouteContext(api_key_id="7"), HIGH, ("ops-key", "loraswap-base")),
    (RouteContext(api_key_id="8"), HIGH, (None, "support@3")),
    (RouteContext(prompt=lambda: "Translate this: hola"), HIGH, ("translate", "loraswap-base")),
    (RouteContext(prompt=lambda: "please translate"), HIGH, (None, "support@3")),
    (RouteContext(headers={"x-region": "eu"}, metadata={"tier": "free"}), HIGH,
     ("both", "support@2")),
    (RouteContext(headers={"x-region": "eu"}), HIGH, (None, "support@3")),  # all must hold
    (RouteContext(), LOW, ("half", "support@1")),
    (RouteContext(), None, (None, "support@3")),  # no user: no segment
]


@pytest.fixture
def helpdesk(router: Router) -> Router:
    router.set_alias("helpdesk", "support@3")
    router.set_rules("helpdesk", RULES, key_id="k1")
    return router


@pytest.mark.parametrize("context,unit,expected", TABLE)
def test_rules_match_in_order_and_fall_back_to_the_pointer(helpdesk: Router, context, unit,
                                                          expected):
    route = helpdesk.route("helpdesk", unit, context)
    assert (route.rule, route.target) == expected
    if route.rule == "translate":
        assert route.system_prompt == "You translate."


def test_the_regex_reads_the_prompt_only_when_a_rule_needs_it(router: Router):
    router.set_alias("helpdesk", "support@3")
    router.set_rules("helpdesk", [{"when": {"users": ["x"]}, "target": "support@1"}])

    def never() -> str:
        raise AssertionError("the prompt was built")

    assert router.route("helpdesk", "u", RouteContext(prompt=never)).target == "support@3"


def test_an_experiment_runs_behind_the_rules(router: Router):
    router.create(alias="helpdesk", variants=[("support@1", 1), ("support@2", 1)], salt="s")
    router.start("helpdesk")
    router.set_rules("helpdesk", [{"name": "vips", "when": {"users": ["vip"]},
                                   "target": "other@1"}])
    assert router.route("helpdesk", "vip").target == "other@1"
    assert router.route("helpdesk", "vip").experiment is None  # not an exposure
    assert router.route("helpdesk", "someone").experiment == "helpdesk"
    history = router.alias_history("helpdesk")
    assert history[-1]["kind"] == "rules" and history[-1]["rules"][0]["name"] == "vips"


BAD = [
    ({"when": {"users": ["a"]}}, "rules[0].target"),
    ({"when": {}, "target": "support@1"}, "rules[0].when"),
    ({"when": {"colour": "red"}, "target": "support@1"}, "rules[0].when"),
    ({"when": {"users": []}, "target": "support@1"}, "rules[0].when.users"),
    ({"when": {"users": "a"}, "target": "gone@1"}, "rules"),
    ({"when": {"user_hash": [0.5, 0.2]}, "target": "support@1"}, "rules[0].when.user_hash"),
    ({"when": {"prompt_regex": "(unclosed"}, "target": "support@1"}, "rules[0].when.prompt_regex"),
    ({"when": {"header": {"bad header": "x"}}, "target": "support@1"}, "rules[0].when.header"),
    ({"when": {"users": ["a"]}, "target": "support@1", "extra": 1}, "rules[0]"),
    ({"when": {"users": ["a"]}, "target": "support@1", "system_prompt": " "},
     "rules[0].system_prompt"),
]


@pytest.mark.parametrize("rule,param", BAD)
def test_a_bad_rule_is_refused_by_name_and_the_rules_stay(router: Router, rule, param):
    router.set_alias("helpdesk", "support@3")
    router.set_rules("helpdesk", [{"name": "keep", "when": {"users": ["a"]},
                                   "target": "support@1"}])
    with pytest.raises(InvalidAlias) as info:
        router.set_rules("helpdesk", [rule])
    assert info.value.param == param, info.value.message
    assert [r.name for r in router.get_alias("helpdesk").rules] == ["keep"]


def test_rules_need_an_alias_and_names_must_differ(router: Router):
    from router import AliasNotFound

    with pytest.raises(AliasNotFound, match="set its default target first"):
        router.set_rules("nobody", [])
    with pytest.raises(InvalidAlias, match="repeat"):
        parse_rules([{"name": "a", "when": {"users": ["x"]}, "target": "b@1"}] * 2, str)
