"""Experiment definitions: the rows, their life cycle and the rules that guard them.

Life cycle: draft -> running <-> paused -> stopped (terminal; start a new experiment to
test again). One running or paused experiment per alias. While paused, the alias serves
the control to everyone and those requests are not counted as exposures. A stopped
experiment's alias is no longer served.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import NamedTuple

from sqlite_utils import Database

from common.sqlite import write_transaction
from common.timeutil import epoch_to_iso
from router.errors import ExperimentConflict, ExperimentNotFound, InvalidExperiment
from router.guardrails import check_guardrails_spec

__all__ = [
    "ACTIVE",
    "NAME",
    "BASE_REF",
    "Experiment",
    "Variant",
    "VariantIn",
    "create_experiment",
    "cut_variant",
    "delete_experiment",
    "get_experiment",
    "list_experiments",
    "set_status",
    "set_weights",
]

BASE_REF = "base"
ACTIVE = ("running", "paused")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TRANSITIONS = {
    "start": ({"draft", "paused"}, "running"),
    "pause": ({"running"}, "paused"),
    "stop": ({"draft", "running", "paused"}, "stopped"),
}


@dataclass(frozen=True)
class Variant:
    """One arm. `ref` is its key everywhere (weights, the request log, results): the pinned
    ref it serves, or, for a prompt variant, its own name over `serves` plus a system prompt."""

    ref: str  # "name@version" (pinned at creation), "base", or a prompt variant's name
    weight: int
    serves: str | None = None  # prompt variants: the pinned ref (or "base") they run on
    system_prompt: str | None = None

    @property
    def target(self) -> str:
        """The ref that answers: the base or a pinned adapter version."""
        return self.serves or self.ref


@dataclass(frozen=True)
class Experiment:
    id: int
    name: str
    alias: str
    salt: str
    status: str
    metric: str
    control: str
    retention: bool
    score_min: float
    score_max: float
    labels: tuple[str, ...]
    description: str
    created_at: float
    started_at: float | None
    stopped_at: float | None
    weights_changed_at: float | None
    variants: tuple[Variant, ...]
    mode: str = "fixed"  # or "bandit" (router/bandit.py)
    min_share: float = 0.1  # bandit: every variant keeps at least this share of new users
    bandit_interval_s: float = 60.0  # bandit: how often the weights are recomputed
    guardrails: dict = field(default_factory=dict)  # limit -> value (router/guardrails.py)
    cut: tuple[tuple[str, str, float], ...] = ()  # (variant, reason, when) cut by a guardrail
    auto_promote: bool = False  # end by promoting the winner once the sequential test decides

    def variant(self, key: str) -> Variant:
        return next(v for v in self.variants if v.ref == key)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["labels"] = list(self.labels)
        data["variants"] = [asdict(v) for v in self.variants]
        for key in ("created_at", "started_at", "stopped_at", "weights_changed_at"):
            data[key] = epoch_to_iso(data[key])
        data["guardrails"] = dict(self.guardrails)
        data["cut"] = [{"variant": v, "reason": r, "at": epoch_to_iso(t)} for v, r, t in self.cut]
        del data["salt"]
        return data


def _row_to_experiment(row: dict, variants: Sequence[Variant], cut: Sequence[tuple] = ()) -> Experiment:
    return Experiment(
        id=row["id"], name=row["name"], alias=row["alias"], salt=row["salt"],
        status=row["status"], metric=row["metric"], control=row["control"],
        retention=bool(row["retention"]), score_min=row["score_min"],
        score_max=row["score_max"], labels=tuple(json.loads(row["labels"])),
        description=row["description"], created_at=row["created_at"],
        started_at=row["started_at"], stopped_at=row["stopped_at"],
        weights_changed_at=row["weights_changed_at"], variants=tuple(variants),
        mode=row["mode"], min_share=row["min_share"], bandit_interval_s=row["bandit_interval_s"],
        guardrails=json.loads(row["guardrails"]), cut=tuple(cut),
        auto_promote=bool(row["auto_promote"]),
    )


def _variants(db: Database, experiment_id: int) -> list[Variant]:
    rows = db.execute(
        "SELECT ref, weight, serves, system_prompt FROM experiment_variants "
        "WHERE experiment_id = ? ORDER BY position", [experiment_id],
    ).fetchall()
    return [Variant(*row) for row in rows]


def _fetch(db: Database, where: str, params: Sequence) -> list[Experiment]:
    cursor = db.execute(f"SELECT * FROM experiments WHERE {where} ORDER BY id", params)
    cols = [c[0] for c in cursor.description]
    rows = [dict(zip(cols, r, strict=True)) for r in cursor.fetchall()]
    return [_row_to_experiment(r, _variants(db, r["id"]), _cut(db, r["id"])) for r in rows]


def _cut(db: Database, experiment_id: int) -> list[tuple[str, str, float]]:
    return [tuple(r) for r in db.execute(
        "SELECT variant, reason, ts FROM experiment_events WHERE experiment_id = ? "
        "AND kind = 'guardrail' ORDER BY id", [experiment_id]).fetchall()]


def get_experiment(db: Database, name: str) -> Experiment:
    found = _fetch(db, "name = ?", [name])
    if not found:
        raise ExperimentNotFound(f"no experiment named {name!r}", param="name")
    return found[0]


def list_experiments(db: Database, statuses: Sequence[str] | None = None) -> list[Experiment]:
    if statuses:
        marks = ",".join("?" * len(statuses))
        return _fetch(db, f"status IN ({marks})", list(statuses))
    return _fetch(db, "1", [])


def _check_weights(variants: Sequence[Variant]) -> None:
    if len(variants) < 2:
        raise InvalidExperiment("an experiment needs at least two variants", param="variants")
    refs = [v.ref for v in variants]
    if len(set(refs)) != len(refs):
        raise InvalidExperiment(f"variants repeat a ref: {refs}", param="variants")
    if any(v.weight < 0 for v in variants) or sum(v.weight for v in variants) <= 0:
        raise InvalidExperiment(
            "weights must be non-negative integers with a positive sum", param="variants"
        )


def create_experiment(
    db: Database,
    *,
    alias: str,
    variants: Sequence[VariantIn],
    name: str | None = None,
    control: str | None = None,
    metric: str = "thumbs",
    retention: bool = False,
    score_min: float = 1.0,
    score_max: float = 5.0,
    labels: Sequence[str] = (),
    description: str = "",
    salt: str | None = None,
    mode: str = "fixed",
    min_share: float = 0.1,
    bandit_interval_s: float = 60.0,
    guardrails: dict | None = None,
    auto_promote: bool = False,
    resolve: Callable[[str], str] = lambda ref: ref,
) -> Experiment:
    """Insert a draft. `resolve` pins each ref to `name@version` (or raises InvalidExperiment).
    A variant with a system prompt is a prompt variant: its `ref` names what it serves, and its
    key is its `serves` field when given as a name, else `<pinned ref>+prompt`."""
    if not NAME.match(alias):
        raise InvalidExperiment(
            f"alias {alias!r} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,63}} (no '@' or '/')",
            param="alias",
        )
    if metric not in ("thumbs", "score"):
        raise InvalidExperiment(f"metric must be 'thumbs' or 'score', not {metric!r}", param="metric")
    if not score_min < score_max:
        raise InvalidExperiment("score_min must be below score_max", param="score_min")
    pinned = [_pin(v, resolve) for v in variants]
    _check_weights(pinned)
    _check_mode(mode, metric, min_share, bandit_interval_s, len(pinned))
    limits = check_guardrails_spec(guardrails or {})
    refs = [v.ref for v in pinned]
    if control is None:
        control_ref = refs[0]
    else:
        control_ref = control if control in refs else resolve(control)
        if control_ref not in refs:
            raise InvalidExperiment(
                f"control {control!r} is not one of the variants {refs}", param="control"
            )
    if name is None:
        taken = {r[0] for r in db.execute("SELECT name FROM experiments").fetchall()}
        name, n = alias, 2
        while name in taken:
            name, n = f"{alias}-{n}", n + 1
    elif not NAME.match(name):
        raise InvalidExperiment(f"experiment name {name!r} is not a valid name", param="name")
    with write_transaction(db):
        if db.execute("SELECT 1 FROM experiments WHERE name = ?", [name]).fetchone():
            raise ExperimentConflict(f"an experiment named {name!r} already exists", param="name")
        cursor = db.execute(
            "INSERT INTO experiments (name, alias, salt, status, metric, control, retention, "
            "score_min, score_max, labels, description, created_at, mode, min_share, "
            "bandit_interval_s, guardrails, auto_promote) VALUES (?, ?, ?, 'draft', ?, ?, ?, ?, ?, "
            "?, ?, ?, ?, ?, ?, ?, ?)",
            [name, alias, salt or secrets.token_hex(8), metric, control_ref, int(retention),
             float(score_min), float(score_max), json.dumps(list(labels)), description,
             time.time(), mode, float(min_share), float(bandit_interval_s), json.dumps(limits),
             int(auto_promote)],
        )
        _write_variants(db, cursor.lastrowid, pinned)
    return get_experiment(db, name)


VARIANT_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


class VariantIn(NamedTuple):
    """A variant as asked for: `ref` is what serves it; `name` and `system_prompt` make it a
    prompt variant (the name is its key; default `<ref>+prompt`)."""

    ref: str
    weight: int
    name: str | None = None
    system_prompt: str | None = None


def _pin(v: VariantIn, resolve: Callable[[str], str]) -> Variant:
    """A variant with its ref pinned; a prompt variant gets its key (given or derived)."""
    if v.system_prompt is None:
        if v.name is not None:
            raise InvalidExperiment(f"variant {v.name!r}: a name is only for a prompt variant "
                                    "(give system_prompt)", param="variants")
        return Variant(resolve(v.ref), int(v.weight))
    if not v.system_prompt.strip():
        raise InvalidExperiment("a prompt variant's system_prompt must not be empty",
                                param="variants")
    serves = resolve(v.ref)
    key = v.name or f"{serves.replace('@', '-v')}+prompt"
    if not VARIANT_KEY.match(key):
        raise InvalidExperiment(f"prompt variant name {key!r} must match "
                                "[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", param="variants")
    return Variant(key, int(v.weight), serves, v.system_prompt)


def _check_mode(mode: str, metric: str, min_share: float, interval: float, variants: int) -> None:
    if mode not in ("fixed", "bandit"):
        raise InvalidExperiment(f"mode must be 'fixed' or 'bandit', not {mode!r}", param="mode")
    if mode == "fixed":
        return
    if metric != "thumbs":
        raise InvalidExperiment("bandit mode needs the thumbs metric (a positive rate per variant)",
                                param="metric")
    if not 0 <= min_share <= 1 / variants:
        raise InvalidExperiment(
            f"min_share must be between 0 and 1/{variants} (every variant keeps at least this "
            "share of new users)", param="min_share")
    if not interval > 0:
        raise InvalidExperiment("bandit_interval_s must be positive", param="bandit_interval_s")


def _write_variants(db: Database, experiment_id: int, variants: Sequence[Variant]) -> None:
    db.execute("DELETE FROM experiment_variants WHERE experiment_id = ?", [experiment_id])
    for position, v in enumerate(variants):
        db.execute(
            "INSERT INTO experiment_variants (experiment_id, position, ref, weight, serves, "
            "system_prompt) VALUES (?, ?, ?, ?, ?, ?)",
            [experiment_id, position, v.ref, v.weight, v.serves, v.system_prompt],
        )


def set_status(
    db: Database, name: str, action: str, check: Callable[[Experiment], None] | None = None
) -> Experiment:
    """Apply start / pause / stop. `check` may veto a start (adapters gone, alias taken)."""
    allowed, target = _TRANSITIONS[action]
    with write_transaction(db):
        exp = get_experiment(db, name)
        if exp.status not in allowed:
            raise ExperimentConflict(
                f"cannot {action} experiment {name!r}: it is {exp.status}", param="name"
            )
        if action == "start":
            other = db.execute(
                "SELECT name FROM experiments WHERE alias = ? AND status IN ('running', 'paused') "
                "AND id != ?",
                [exp.alias, exp.id],
            ).fetchone()
            if other:
                raise ExperimentConflict(
                    f"alias {exp.alias!r} already has an active experiment ({other[0]!r}); "
                    "stop it first",
                    param="name",
                )
            if check is not None:
                check(exp)
        now = time.time()
        column = {"running": "started_at", "stopped": "stopped_at"}.get(target)
        if column == "started_at" and exp.started_at is not None:
            column = None  # resuming keeps the first start
        sets = "status = ?" + (f", {column} = ?" if column else "")
        params = [target] + ([now] if column else []) + [exp.id]
        db.execute(f"UPDATE experiments SET {sets} WHERE id = ?", params)
    return get_experiment(db, name)


def set_weights(db: Database, name: str, variants: Sequence[Variant]) -> Experiment:
    """Change weights only: the set of variants is fixed once the experiment exists."""
    with write_transaction(db):
        exp = get_experiment(db, name)
        if exp.status == "stopped":
            raise ExperimentConflict(f"experiment {name!r} is stopped", param="name")
        given = {v.ref: v.weight for v in variants}
        current = [v.ref for v in exp.variants]
        if set(given) != set(current) or len(given) != len(variants):
            raise InvalidExperiment(
                f"give a weight for exactly the variants {current} (got {list(given)})",
                param="variants",
            )
        new = [replace(v, weight=int(given[v.ref])) for v in exp.variants]  # keep declared order
        _check_weights(new)
        _write_variants(db, exp.id, new)
        if exp.status != "draft":
            db.execute(
                "UPDATE experiments SET weights_changed_at = ? WHERE id = ?", [time.time(), exp.id]
            )
    return get_experiment(db, name)


def cut_variant(db: Database, name: str, variant: str, reason: str) -> Experiment:
    """Give `variant` weight 0 and record why, in one transaction (a guardrail's rollback)."""
    with write_transaction(db):
        exp = get_experiment(db, name)
        if exp.status != "running" or variant == exp.control:
            return exp
        new = [replace(v, weight=0 if v.ref == variant else v.weight) for v in exp.variants]
        if sum(v.weight for v in new) <= 0:
            new = [replace(v, weight=1 if v.ref == exp.control else 0) for v in exp.variants]
        _write_variants(db, exp.id, new)
        now = time.time()
        db.execute("UPDATE experiments SET weights_changed_at = ? WHERE id = ?", [now, exp.id])
        db.execute("INSERT INTO experiment_events (experiment_id, ts, kind, variant, reason) "
                   "VALUES (?, ?, 'guardrail', ?, ?)", [exp.id, now, variant, reason])
    return get_experiment(db, name)


def delete_experiment(db: Database, name: str) -> None:
    """Only experiments that never served a request: the others keep their data; stop them."""
    with write_transaction(db):
        exp = get_experiment(db, name)
        if exp.status in ACTIVE:
            raise ExperimentConflict(f"experiment {name!r} is {exp.status}; stop it first")
        if db.execute("SELECT 1 FROM requests WHERE experiment_id = ? LIMIT 1", [exp.id]).fetchone():
            raise ExperimentConflict(
                f"experiment {name!r} has logged requests; it stays (stopped) for analysis"
            )
        db.execute("DELETE FROM experiment_variants WHERE experiment_id = ?", [exp.id])
        db.execute("DELETE FROM experiment_events WHERE experiment_id = ?", [exp.id])
        db.execute("DELETE FROM experiments WHERE id = ?", [exp.id])
