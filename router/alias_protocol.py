"""Wire formats of the alias admin API (`/admin/aliases`) and of promotion."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AliasHistory", "AliasList", "AliasRulesSet", "AliasSet", "AliasView",
           "HistoryEntry", "PromoteIn", "RuleView"]


class _Admin(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AliasSet(_Admin):
    target: str = Field(min_length=1, max_length=200,
                        description="name@version, name (pinned to its latest now) or 'base'")
    system_prompt: str | None = Field(default=None, min_length=1, max_length=100_000)
    reason: str | None = Field(default=None, max_length=1000,
                               description="why, for the history (default: 'set by hand')")


class AliasRulesSet(_Admin):
    rules: list[dict[str, Any]] = Field(
        max_length=64, description="[{name, when: {header|metadata|users|user_hash|api_key|"
                                   "prompt_regex}, target, system_prompt?}]; first match wins")
    reason: str | None = Field(default=None, max_length=1000)


class PromoteIn(_Admin):
    variant: str | None = Field(default=None, min_length=1, max_length=200,
                                description="the variant key to promote; default: the winner "
                                            "the sequential test decided")
    reason: str | None = Field(default=None, max_length=1000)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuleView(_Wire):
    name: str
    when: dict[str, Any]
    target: str
    system_prompt: str | None = None


class AliasView(_Wire):
    object: Literal["alias"] = "alias"
    name: str
    target: str = Field(description="what the alias serves when no rule matches and no "
                                    "experiment runs: name@version or 'base'")
    system_prompt: str | None
    rules: list[RuleView]
    revision: int
    updated_at: str
    updated_by: str | None = Field(description="the API key id that made the last change")
    experiment: str | None = Field(description="the running or paused experiment, if any")


class AliasList(_Wire):
    object: Literal["list"] = "list"
    data: list[AliasView]


class HistoryEntry(_Wire):
    revision: int
    at: str
    by: str | None = Field(description="API key id; null from the CLI or loopback")
    kind: Literal["set", "rules", "promote", "rollback", "delete", "experiment-start",
                  "experiment-stop", "guardrail"]
    from_: str | None = Field(alias="from", description="what the alias served before: a ref, "
                                                       "'<ref>+prompt' or 'experiment:NAME'")
    to: str | None
    rules: list[dict[str, Any]] | None = Field(description="the rules after, when they changed")
    reason: str

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AliasHistory(_Wire):
    object: Literal["list"] = "list"
    alias: str
    data: list[HistoryEntry]
