"""Routing rules: an alias may send a request somewhere before any experiment split.

A rule is data: `{"name", "when": {...}, "target", "system_prompt"?}`. Every condition in
`when` must hold; the first rule that matches wins, and a request no rule matches goes to
the alias's default (its running experiment, else its pointer). Conditions:
- `header`: {header name: value or [values]}, names case-insensitive, values exact;
- `metadata`: {key: value or [values]} over the request's OpenAI `metadata`;
- `users`: [user ids] (the request's `user`, else its X-User-Id header);
- `user_hash`: [low, high): fractions of users by a hash of the alias and the user id, so a
  segment is stable and independent of any experiment's split;
- `api_key`: [key ids] of the calling key;
- `prompt_regex`: a Python regex searched in the request's text (the chat messages' text
  content, or the completion prompt), over its first PROMPT_SCAN_CHARS characters.

Rules are validated when set (targets pinned to `name@version`, regexes compiled) and
compiled once, so matching on the hot path is dict lookups, a hash and a regex search.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from router.assignment import BUCKETS, bucket_of
from router.errors import InvalidAlias

__all__ = ["MAX_RULES", "PROMPT_SCAN_CHARS", "RouteContext", "Rule", "parse_rules", "rules_json"]

MAX_RULES = 64
MAX_VALUES = 1000  # per list condition
MAX_REGEX = 1000
PROMPT_SCAN_CHARS = 65_536
_CONDITIONS = ("header", "metadata", "users", "user_hash", "api_key", "prompt_regex")
_RULE_KEYS = ("name", "when", "target", "system_prompt")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")


@dataclass(frozen=True)
class RouteContext:
    """What the rules may look at. `prompt` is a callable: the text is built only if a rule
    of the alias has a regex."""

    headers: Mapping[str, str] = field(default_factory=dict)  # names lower-cased
    metadata: Mapping[str, str] = field(default_factory=dict)
    api_key_id: str | None = None
    prompt: Callable[[], str] | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    target: str  # pinned "name@version" or "base"
    system_prompt: str | None
    when: Mapping[str, Any]  # as given (normalised), for display and history
    headers: tuple[tuple[str, frozenset[str]], ...] = ()
    metadata: tuple[tuple[str, frozenset[str]], ...] = ()
    users: frozenset[str] | None = None
    user_hash: tuple[int, int] | None = None  # bucket range [low, high)
    api_keys: frozenset[str] | None = None
    regex: re.Pattern[str] | None = None

    def matches(self, alias: str, unit: str | None, ctx: RouteContext) -> bool:
        for name, values in self.headers:
            if ctx.headers.get(name) not in values:
                return False
        for key, values in self.metadata:
            if ctx.metadata.get(key) not in values:
                return False
        if self.users is not None and unit not in self.users:
            return False
        if self.user_hash is not None:
            if not unit:
                return False
            low, high = self.user_hash
            if not low <= bucket_of(f"rule:{alias}", unit) < high:
                return False
        if self.api_keys is not None and ctx.api_key_id not in self.api_keys:
            return False
        if self.regex is not None:
            text = ctx.prompt() if ctx.prompt is not None else ""
            if self.regex.search(text[:PROMPT_SCAN_CHARS]) is None:
                return False
        return True

    def as_dict(self) -> dict:
        out = {"name": self.name, "when": dict(self.when), "target": self.target}
        if self.system_prompt is not None:
            out["system_prompt"] = self.system_prompt
        return out


def _values(where: str, raw: Any) -> frozenset[str]:
    values = [raw] if isinstance(raw, str) else raw
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise InvalidAlias(f"{where} must be a string or a non-empty list of strings",
                           param=where)
    if len(values) > MAX_VALUES:
        raise InvalidAlias(f"{where} has more than {MAX_VALUES} values", param=where)
    return frozenset(values)


def _pairs(where: str, raw: Any, names: re.Pattern[str] | None) -> tuple:
    if not isinstance(raw, dict) or not raw:
        raise InvalidAlias(f"{where} must be a non-empty object of name -> value(s)", param=where)
    out = []
    for key, value in raw.items():
        if names is not None and not names.match(key):
            raise InvalidAlias(f"{where}: {key!r} is not a valid header name", param=where)
        out.append((key.lower() if names is not None else key, _values(f"{where}.{key}", value)))
    return tuple(out)


def _user_hash(where: str, raw: Any) -> tuple[int, int]:
    ok = (isinstance(raw, list) and len(raw) == 2
          and all(isinstance(x, int | float) and not isinstance(x, bool) for x in raw))
    if not ok or not 0 <= raw[0] < raw[1] <= 1:
        raise InvalidAlias(f"{where} must be [low, high] with 0 <= low < high <= 1 (the share "
                           "of users it takes)", param=where)
    return round(raw[0] * BUCKETS), round(raw[1] * BUCKETS)


def _regex(where: str, raw: Any) -> re.Pattern[str]:
    if not isinstance(raw, str) or not raw or len(raw) > MAX_REGEX:
        raise InvalidAlias(f"{where} must be a regex of 1 to {MAX_REGEX} characters", param=where)
    try:
        return re.compile(raw)
    except re.error as exc:
        raise InvalidAlias(f"{where} does not compile: {exc}", param=where) from None


def _rule(i: int, raw: Any, resolve: Callable[[str], str]) -> Rule:
    where = f"rules[{i}]"
    if not isinstance(raw, dict):
        raise InvalidAlias(f"{where} must be an object", param=where)
    unknown = sorted(set(raw) - set(_RULE_KEYS))
    if unknown:
        raise InvalidAlias(f"{where} has unknown keys {unknown}; a rule has {list(_RULE_KEYS)}",
                           param=where)
    name = raw.get("name", f"rule-{i + 1}")
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise InvalidAlias(f"{where}.name must be 1 to 64 characters", param=f"{where}.name")
    when = raw.get("when")
    if not isinstance(when, dict) or not when:
        raise InvalidAlias(f"{where}.when must name at least one condition of "
                           f"{list(_CONDITIONS)} (the alias's own target is the default)",
                           param=f"{where}.when")
    unknown = sorted(set(when) - set(_CONDITIONS))
    if unknown:
        raise InvalidAlias(f"{where}.when has unknown conditions {unknown}; known: "
                           f"{list(_CONDITIONS)}", param=f"{where}.when")
    target = raw.get("target")
    if not isinstance(target, str) or not target:
        raise InvalidAlias(f"{where}.target must name a version (name@version) or 'base'",
                           param=f"{where}.target")
    prompt = raw.get("system_prompt")
    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        raise InvalidAlias(f"{where}.system_prompt must be non-empty text",
                           param=f"{where}.system_prompt")
    w = f"{where}.when"
    return Rule(
        name=name, target=resolve(target), system_prompt=prompt, when=when,
        headers=_pairs(f"{w}.header", when["header"], _HEADER_NAME) if "header" in when else (),
        metadata=_pairs(f"{w}.metadata", when["metadata"], None) if "metadata" in when else (),
        users=_values(f"{w}.users", when["users"]) if "users" in when else None,
        user_hash=_user_hash(f"{w}.user_hash", when["user_hash"]) if "user_hash" in when else None,
        api_keys=_values(f"{w}.api_key", when["api_key"]) if "api_key" in when else None,
        regex=_regex(f"{w}.prompt_regex", when["prompt_regex"]) if "prompt_regex" in when else None,
    )


def parse_rules(raw: Any, resolve: Callable[[str], str]) -> tuple[Rule, ...]:
    """Validated, compiled rules; InvalidAlias names the first bad one. `resolve` pins a
    target (and raises for one that cannot be served)."""
    if not isinstance(raw, list):
        raise InvalidAlias("rules must be a list", param="rules")
    if len(raw) > MAX_RULES:
        raise InvalidAlias(f"at most {MAX_RULES} rules per alias", param="rules")
    rules = tuple(_rule(i, r, resolve) for i, r in enumerate(raw))
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise InvalidAlias(f"rule names repeat: {names}", param="rules")
    return rules


def rules_json(rules: tuple[Rule, ...]) -> str:
    return json.dumps([r.as_dict() for r in rules], sort_keys=True)
