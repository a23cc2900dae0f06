"""Aliases as pointers: the version (or base, with an optional system prompt) an alias serves
when no experiment runs on it, its routing rules, and the history of every change.

An alias answers from, in order: the first routing rule that matches, else its running or
paused experiment, else its pointer. An experiment that starts on an alias without a pointer
gives it one (its control), so stopping the experiment never leaves the alias answering 404:
it serves the pointer, or the winner if the experiment ends by promotion.

The history is append-only. Each entry says what the alias served before and after (a ref,
`experiment:NAME`, or a ref with `+prompt` when a system prompt comes with it), who changed
it (the API key id, or the CLI), when, and why. Pointer and rule changes bump the alias's
revision; experiment events (start, stop, a guardrail cut) are recorded at the revision
they happened under.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from sqlite_utils import Database

from common.sqlite import write_transaction
from common.timeutil import epoch_to_iso
from router.alias_rules import Rule, parse_rules, rules_json
from router.errors import AliasNotFound

__all__ = ["Alias", "alias_history", "aliases_serving", "delete_alias", "describe", "find_alias", "list_aliases",
           "pointer_at", "record_event", "write_alias"]


@dataclass(frozen=True)
class Alias:
    name: str
    target: str  # pinned "name@version" or "base"
    system_prompt: str | None
    rules: tuple[Rule, ...]
    revision: int
    updated_at: float
    updated_by: str | None

    def served(self) -> str:
        """The pointer as the history writes it."""
        return describe(self.target, self.system_prompt)

    def as_dict(self) -> dict:
        return {"name": self.name, "target": self.target, "system_prompt": self.system_prompt,
                "rules": [r.as_dict() for r in self.rules], "revision": self.revision,
                "updated_at": epoch_to_iso(self.updated_at), "updated_by": self.updated_by}


def describe(target: str, system_prompt: str | None) -> str:
    return f"{target}+prompt" if system_prompt else target


def _row(row: tuple) -> Alias:
    name, target, prompt, rules, revision, updated_at, updated_by = row
    return Alias(name, target, prompt, parse_rules(json.loads(rules), lambda ref: ref),
                 revision, updated_at, updated_by)


_SELECT = "SELECT name, target, system_prompt, rules, revision, updated_at, updated_by FROM aliases"


def find_alias(db: Database, name: str) -> Alias | None:
    row = db.execute(f"{_SELECT} WHERE name = ?", [name]).fetchone()
    return None if row is None else _row(row)


def list_aliases(db: Database, known: Mapping[str, Alias] | None = None) -> list[Alias]:
    """`known`: aliases parsed before; one whose revision and time are unchanged is reused
    (the router re-reads every reconcile interval; its rules need no re-parsing)."""
    known = known or {}
    out = []
    for row in db.execute(f"{_SELECT} ORDER BY name").fetchall():
        old = known.get(row[0])
        same = old is not None and (old.revision, old.updated_at) == (row[4], row[5])
        out.append(old if same else _row(row))
    return out


def _history(db: Database, alias: str, revision: int, kind: str, from_: str | None,
             to: str | None, reason: str, key_id: str | None, rules: str | None = None,
             now: float | None = None, state: dict | None = None) -> None:
    db.execute(
        "INSERT INTO alias_history (alias, revision, ts, key_id, kind, from_target, to_target, "
        "rules, state, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [alias, revision, time.time() if now is None else now, key_id, kind, from_, to, rules,
         None if state is None else json.dumps(state), reason])


def write_alias(db: Database, name: str, *, target: str, system_prompt: str | None,
                rules: tuple[Rule, ...] | None, kind: str, reason: str,
                key_id: str | None, serving_before: str | None = None) -> Alias:
    """Create or change the pointer (and the rules, unless None: kept) in one transaction,
    with its history entry. `serving_before`: what the alias served, when not its old pointer
    (a running experiment)."""
    with write_transaction(db):
        old = find_alias(db, name)
        keep = old.rules if old is not None and rules is None else (rules or ())
        text = rules_json(keep)
        now = time.time()
        revision = 1 if old is None else old.revision + 1
        db.execute(
            "INSERT INTO aliases (name, target, system_prompt, rules, revision, updated_at, "
            "updated_by) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "target = excluded.target, system_prompt = excluded.system_prompt, "
            "rules = excluded.rules, revision = excluded.revision, "
            "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            [name, target, system_prompt, text, revision, now, key_id])
        before = serving_before or (old.served() if old is not None else None)
        rules_changed = old is None or rules_json(old.rules) != text
        state = {"target": target, "system_prompt": system_prompt, "rules": json.loads(text)}
        _history(db, name, revision, kind, before, describe(target, system_prompt), reason,
                 key_id, text if rules_changed else None, now, state)
    found = find_alias(db, name)
    assert found is not None
    return found


def record_event(db: Database, name: str, kind: str, from_: str | None, to: str | None,
                 reason: str, key_id: str | None = None) -> None:
    """An experiment event on the alias (start, stop, guardrail cut): no pointer change."""
    alias = find_alias(db, name)
    _history(db, name, alias.revision if alias else 0, kind, from_, to, reason, key_id)


def pointer_at(db: Database, name: str, revision: int) -> dict | None:
    """The pointer (target, system_prompt, rules) the alias had at `revision`."""
    row = db.execute("SELECT state FROM alias_history WHERE alias = ? AND revision = ? AND "
                     "state IS NOT NULL ORDER BY id DESC LIMIT 1", [name, revision]).fetchone()
    return None if row is None else json.loads(row[0])


def delete_alias(db: Database, name: str, reason: str, key_id: str | None) -> None:
    with write_transaction(db):
        alias = find_alias(db, name)
        if alias is None:
            raise AliasNotFound(f"no alias named {name!r}", param="name")
        db.execute("DELETE FROM aliases WHERE name = ?", [name])
        _history(db, name, alias.revision + 1, "delete", alias.served(), None, reason, key_id)


def aliases_serving(db: Database, ref: str) -> list[str]:
    """Aliases whose pointer or a rule serves `ref` (the archive and delete guard)."""
    return [a.name for a in list_aliases(db)
            if ref == a.target or any(r.target == ref for r in a.rules)]


def alias_history(db: Database, name: str) -> list[dict]:
    rows = db.execute(
        "SELECT revision, ts, key_id, kind, from_target, to_target, rules, reason "
        "FROM alias_history WHERE alias = ? ORDER BY id", [name]).fetchall()
    if not rows and find_alias(db, name) is None:
        raise AliasNotFound(f"no alias named {name!r}", param="name")
    return [{"revision": rev, "at": epoch_to_iso(ts), "by": key, "kind": kind, "from": from_,
             "to": to, "rules": None if rules is None else json.loads(rules), "reason": reason}
            for rev, ts, key, kind, from_, to, rules, reason in rows]
