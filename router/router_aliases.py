"""The `Router`'s alias side: pointers, routing rules, promotion and rollback.

A mixin so `router.py` stays the hot path and the experiment life cycle; everything here is
admin work (SQL under the router's lock), and each change reloads the in-memory table the
hot path reads. Why aliases are pointers with history: router/aliases.py.
"""

from __future__ import annotations

import re
from typing import Any

from common.sqlite import write_transaction
from router.alias_rules import parse_rules
from router.aliases import (
    Alias,
    alias_history,
    delete_alias,
    find_alias,
    list_aliases,
    pointer_at,
    record_event,
    write_alias,
)
from router.errors import (
    AliasConflict,
    AliasNotFound,
    ExperimentConflict,
    InvalidAlias,
    InvalidExperiment,
)
from router.experiments import ACTIVE, NAME, Experiment, get_experiment, set_status
from router.results import unit_lifts

# OpenAI's name for a fine-tuned model, which the fine-tuning API points at its version.
FINE_TUNED_NAME = re.compile(r"^ft:[A-Za-z0-9][A-Za-z0-9._-]{0,127}:[A-Za-z0-9._-]{0,64}:"
                             r"ftjob-[0-9a-f]{24}$")

__all__ = ["AliasAdmin", "winner_of"]


def winner_of(db: Any, exp: Experiment) -> tuple[str, str] | None:
    """(variant, why) once the sequential test has decided every live variant, else None.
    The winner is the variant that beats the control by the most, else the control."""
    cut = {variant for variant, _reason, _ts in exp.cut}
    lifts = {k: lift for k, lift in unit_lifts(db, exp)[1].items() if k not in cut}
    live = {k: lift["decision"] for k, lift in lifts.items()}
    if not live or "keep-running" in live.values():
        return None
    wins = [k for k, d in live.items() if d == "variant-wins"]
    if wins:
        best = max(wins, key=lambda k: lifts[k]["absolute"] or 0.0)
        return best, (f"variant-wins (+{lifts[best]['absolute'] or 0.0:.3g} per user over "
                      "the control)")
    decided = sorted(set(live.values()))
    return exp.control, f"{' / '.join(decided)} for every variant: the control stays"


class AliasAdmin:
    """Needs the Router's `_db`, `_lock`, `_resolve`, `_check_alias` and `_reload`."""

    _db: Any
    _lock: Any

    def _target(self, ref: str, param: str) -> str:
        try:
            return self._resolve(ref)  # type: ignore[attr-defined]
        except InvalidExperiment as exc:
            raise InvalidAlias(exc.message, param=param) from None

    def get_alias(self, name: str) -> Alias:
        with self._lock:
            alias = find_alias(self._db, name)
        if alias is None:
            raise AliasNotFound(f"no alias named {name!r}", param="name")
        return alias

    def list_aliases(self) -> list[Alias]:
        with self._lock:
            return list_aliases(self._db)

    def alias_history(self, name: str) -> list[dict]:
        with self._lock:
            return alias_history(self._db, name)

    def set_alias(self, name: str, target: str, system_prompt: str | None = None, *,
                  key_id: str | None = None, reason: str | None = None) -> Alias:
        """Point `name` at a version (pinned now) or the base, with an optional system prompt."""
        if not (NAME.match(name) or FINE_TUNED_NAME.match(name)):
            raise InvalidAlias(f"alias {name!r} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}} "
                               "(no '@' or '/'), or be a fine-tuned model's name "
                               "(ft:<base>:<suffix>:<job id>)", param="name")
        try:
            self._check_alias(name)  # type: ignore[attr-defined]
        except InvalidExperiment as exc:
            raise InvalidAlias(exc.message, param="name") from None
        if system_prompt is not None and not system_prompt.strip():
            raise InvalidAlias("system_prompt must be non-empty text", param="system_prompt")
        pinned = self._target(target, "target")
        with self._lock:
            alias = write_alias(self._db, name, target=pinned, system_prompt=system_prompt,
                                rules=None, kind="set", reason=reason or "set by hand",
                                key_id=key_id)
        self._reload()  # type: ignore[attr-defined]
        return alias

    def set_rules(self, name: str, rules: Any, *, key_id: str | None = None,
                  reason: str | None = None) -> Alias:
        """Replace the alias's routing rules (validated; targets pinned)."""
        compiled = parse_rules(rules, lambda ref: self._target(ref, "rules"))
        with self._lock, write_transaction(self._db):
            alias = find_alias(self._db, name)
            if alias is None:
                raise AliasNotFound(f"no alias named {name!r}; set its default target first",
                                    param="name")
            alias = write_alias(self._db, name, target=alias.target,
                                system_prompt=alias.system_prompt, rules=compiled, kind="rules",
                                reason=reason or f"{len(compiled)} routing rule(s) set by hand",
                                key_id=key_id)
        self._reload()  # type: ignore[attr-defined]
        return alias

    def rollback_alias(self, name: str, *, key_id: str | None = None) -> Alias:
        """Back to the pointer and rules of the revision before this one (a new revision)."""
        with self._lock, write_transaction(self._db):
            alias = find_alias(self._db, name)
            if alias is None:
                raise AliasNotFound(f"no alias named {name!r}", param="name")
            before = pointer_at(self._db, name, alias.revision - 1)
            if before is None:
                raise AliasConflict(f"alias {name!r} has no earlier revision to roll back to",
                                    param="name")
            alias = write_alias(
                self._db, name, target=before["target"], system_prompt=before["system_prompt"],
                rules=parse_rules(before["rules"], lambda ref: ref), kind="rollback",
                reason=f"rolled back by hand to revision {alias.revision - 1}", key_id=key_id)
        self._reload()  # type: ignore[attr-defined]
        return alias

    def delete_alias(self, name: str, *, key_id: str | None = None) -> None:
        with self._lock, write_transaction(self._db):
            active = self._db.execute("SELECT name FROM experiments WHERE alias = ? AND status "
                                      "IN ('running', 'paused')", [name]).fetchone()
            if active:
                raise AliasConflict(f"alias {name!r} has an active experiment ({active[0]!r}); "
                                    "stop it first", param="name")
            delete_alias(self._db, name, "deleted by hand", key_id)
        self._reload()  # type: ignore[attr-defined]

    def promote(self, name: str, variant: str | None = None, *, key_id: str | None = None,
                reason: str | None = None) -> Experiment:
        """End experiment `name` by pointing its alias at `variant` (default: the winner the
        sequential test decided; refused while it is undecided). Stops it if active."""
        with self._lock, write_transaction(self._db):
            exp = get_experiment(self._db, name)
            if exp.status == "draft":
                raise ExperimentConflict(f"experiment {name!r} never ran; nothing to promote",
                                         param="name")
            if variant is None:
                decided = winner_of(self._db, exp)
                if decided is None:
                    raise ExperimentConflict(
                        f"experiment {name!r} has not decided yet (some variant is "
                        "keep-running); name the variant to promote it anyway", param="variant")
                variant, why = decided
                reason = reason or f"promoted by experiment {name}: {why}"
            keys = {v.ref for v in exp.variants}
            key = variant if variant in keys else self._target(variant, "variant")
            if key not in keys:
                raise InvalidExperiment(f"{variant!r} is not a variant of {name!r} "
                                        f"({sorted(keys)})", param="variant")
            chosen = exp.variant(key)
            self._target(chosen.target, "variant")  # still servable (active)?
            if exp.status in ACTIVE:
                set_status(self._db, name, "stop")
            write_alias(self._db, exp.alias, target=chosen.target,
                        system_prompt=chosen.system_prompt, rules=None, kind="promote",
                        reason=reason or f"promoted {key} from experiment {name} by hand",
                        key_id=key_id, serving_before=f"experiment:{name}")
            exp = get_experiment(self._db, name)
        self._reload()  # type: ignore[attr-defined]
        return exp

    # -- hooks the experiment life cycle calls (inside its transaction) -------------------

    def _on_start(self, exp: Experiment, first: bool, key_id: str | None) -> None:
        alias = find_alias(self._db, exp.alias)
        if alias is None:
            control = exp.variant(exp.control)
            alias = write_alias(self._db, exp.alias, target=control.target,
                                system_prompt=control.system_prompt, rules=None, kind="set",
                                reason=f"created for experiment {exp.name} (its control; "
                                       "served after the experiment ends)", key_id=key_id)
        if first:
            record_event(self._db, exp.alias, "experiment-start", alias.served(),
                         f"experiment:{exp.name}", f"experiment {exp.name} started", key_id)

    def _on_stop(self, exp: Experiment, key_id: str | None) -> None:
        alias = find_alias(self._db, exp.alias)
        to = alias.served() if alias else None
        record_event(self._db, exp.alias, "experiment-stop", f"experiment:{exp.name}", to,
                     f"experiment {exp.name} stopped without promotion; the alias serves its "
                     "pointer", key_id)

    def _on_cut(self, exp: Experiment, variant: str, reason: str) -> None:
        record_event(self._db, exp.alias, "guardrail", f"experiment:{exp.name}",
                     f"experiment:{exp.name} without {variant}",
                     f"rolled back {variant} by guardrail: {reason}")
