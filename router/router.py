"""The `Router` facade: what the server calls per request, and what the admin API and CLI use.

Hot path: `route()` reads an in-memory table of active experiments and hashes the unit: a
few microseconds, and never SQL. The table is re-read by `refresh()` (the server's reconcile
loop calls it off the event loop, so experiments changed by another process show up within
one interval) and at once after changes made through this object. `log_request()` only
enqueues; a background thread writes. Everything else runs on the caller's thread under one
lock (admin, feedback, results are not on the hot path).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from common.sqlite import write_transaction
from router.alias_rules import RouteContext
from router.aliases import Alias, aliases_serving, describe, list_aliases
from router.assignment import bucket_of, bucket_ranges, pick, random_bucket
from router.bandit import thompson_weights
from router.errors import InvalidExperiment, RouterError
from router.experiments import (
    ACTIVE,
    BASE_REF,
    Experiment,
    Variant,
    VariantIn,
    create_experiment,
    cut_variant,
    delete_experiment,
    get_experiment,
    list_experiments,
    set_status,
    set_weights,
)
from router.export import ExportResult, export_feedback
from router.feedback import Caller, FeedbackRecord, record_feedback
from router.guardrails import breach, thumb_counts
from router.migrations import open_db
from router.protocol import FeedbackIn
from router.requestlog import RequestLogWriter, RequestRecord, Route
from router.results import compute_results, latest_feedback
from router.router_aliases import AliasAdmin, winner_of

__all__ = ["RegistryLike", "Router"]


class RegistryLike(Protocol):
    """The part of `adapters.Registry` the router uses."""

    def get(self, ref: str, *, verify: bool = False) -> Any: ...
    def add_delete_guard(self, fn: Any) -> None: ...


GUARDRAIL_CHECK_S = 2.0  # how often a running experiment's guardrails are evaluated


@dataclass(frozen=True, slots=True)
class _Compiled:
    exp: Experiment
    ends: tuple[int, ...]
    refs: tuple[str, ...]
    control_index: int
    cut: frozenset[str]  # variants a guardrail cut: their assigned users move too


class Router(AliasAdmin):
    def __init__(
        self,
        db_path: Path,
        registry: RegistryLike | None = None,
        *,
        base_id: str = BASE_REF,
        retention: bool = False,
        log_all: bool = False,
        score_range: tuple[float, float] = (1.0, 5.0),
    ) -> None:
        """`retention`: keep prompts/outputs of every logged request (experiments can also
        turn it on for themselves). `log_all`: log requests that no experiment routed, too.
        `base_id`: the id the server serves the base model under (what a 'base' variant
        routes to). With a registry, variant refs are checked and pinned, and deleting an
        adapter an active experiment uses is refused.
        """
        self.db_path = Path(db_path)
        self.registry = registry
        self.base_id = base_id
        self.retention = retention
        self.log_all = log_all
        self.score_range = score_range
        self._db = open_db(self.db_path)
        self._lock = threading.RLock()
        # Routing refreshes on its own connection and lock, so a long results query or a
        # feedback write holding `_lock` never stalls the event loop that routes.
        self._route_db = open_db(self.db_path)
        self._route_lock = threading.Lock()
        self._writer = RequestLogWriter(self.db_path)
        self._table: dict[str, _Compiled] = {}
        self._pointers: dict[str, Alias] = {}
        self._decided_checked: dict[int, float] = {}  # auto-promote: last decision check
        # Bandit experiments: unit -> variant ref of every unit already assigned, and the
        # last request-log id read into it (router/bandit.py says why users must stay put).
        self._assigned: dict[int, dict[str, str]] = {}
        self._assigned_upto: dict[int, int] = {}
        self._logged: dict[int, set[str]] = {}  # units whose first logged request was read
        self._guard_checked: dict[int, float] = {}  # experiment id -> last guardrail check
        if registry is not None:
            registry.add_delete_guard(self.delete_guard)
        self._reload()

    # -- hot path ----------------------------------------------------------------------

    def route(self, requested_model: str, unit: str | None,
              context: RouteContext | None = None) -> Route | None:
        """The route for an alias request, or None: not an alias, serve `requested_model`.
        Order: the alias's first matching rule, its active experiment, its pointer."""
        compiled = self._table.get(requested_model)
        alias = self._pointers.get(requested_model)
        if alias is not None and alias.rules:
            ctx = context or RouteContext()
            for rule in alias.rules:
                if rule.matches(alias.name, unit, ctx):
                    return self._fixed(alias.name, rule.target, rule.system_prompt, unit, rule.name)
        if compiled is None:
            if alias is None:
                return None
            return self._fixed(alias.name, alias.target, alias.system_prompt, unit, None)
        exp = compiled.exp
        if exp.status == "paused":
            index, bucket, exposed = compiled.control_index, None, False
        else:
            bucket = bucket_of(exp.salt, unit) if unit else random_bucket()
            index, exposed = pick(bucket, compiled.ends), True
            if exp.mode == "bandit" and unit:
                assigned = self._assigned.setdefault(exp.id, {})
                kept = assigned.get(unit)
                if kept is not None and kept not in compiled.cut:
                    index = compiled.refs.index(kept)
                else:  # new, or their variant was cut by a guardrail: assign afresh
                    assigned[unit] = compiled.refs[index]
        variant = exp.variants[index]
        is_base = variant.target == BASE_REF
        return Route(
            alias=exp.alias, experiment=exp.name, experiment_id=exp.id, variant=variant.ref,
            target=self.base_id if is_base else variant.target, is_base=is_base,
            unit=unit or None, bucket=bucket, exposed=exposed, retention=exp.retention,
            system_prompt=variant.system_prompt,
        )

    def _fixed(self, alias: str, target: str, system_prompt: str | None, unit: str | None,
               rule: str | None) -> Route:
        is_base = target == BASE_REF
        return Route(
            alias=alias, experiment=None, experiment_id=None,
            variant=describe(target, system_prompt),
            target=self.base_id if is_base else target, is_base=is_base, unit=unit or None,
            bucket=None, exposed=False, retention=False, system_prompt=system_prompt, rule=rule)

    def log_request(self, record: RequestRecord) -> bool:
        """Queue a record for the log (never blocks on SQLite). False if not logged:
        an unrouted request while `log_all` is off."""
        if record.route is None and not self.log_all:
            return False
        retain = self.retention or (record.route is not None and record.route.retention)
        self._writer.put(record.row(retain))
        return True

    def aliases(self) -> list[str]:
        """Aliases served now (pointers, running or paused experiments), for /v1/models."""
        return sorted(set(self._table) | set(self._pointers))

    def refresh(self) -> None:
        """Re-read the active experiments from SQLite (not on an event loop: it blocks)."""
        self._reload()

    def flush(self, timeout: float = 30.0) -> bool:
        return self._writer.flush(timeout)

    def close(self) -> None:
        self._writer.close()
        with self._lock:
            self._db.close()
        with self._route_lock:
            self._route_db.close()

    def _reload(self) -> None:
        with self._route_lock:
            active = list_experiments(self._route_db, ACTIVE)
            pointers = {a.name: a for a in list_aliases(self._route_db, self._pointers)}
        table = {}
        for exp in active:
            refs = tuple(v.ref for v in exp.variants)
            ends = tuple(end for _start, end in bucket_ranges([v.weight for v in exp.variants]))
            cut = frozenset(variant for variant, _reason, _ts in exp.cut)
            table[exp.alias] = _Compiled(exp, ends, refs, refs.index(exp.control), cut)
            if exp.mode == "bandit":
                self._load_assignments(exp)
        self._table, self._pointers = table, pointers

    def _load_assignments(self, exp: Experiment) -> None:
        """Read units' assignments from the log since the last read. A unit's first logged
        request wins over what this process assigned: with several ingress replicas, two
        may each have assigned a new unit before either's log row was written (only when
        their weight tables differed, for the moment a new weighting takes to reach both),
        and both must settle on one. Reads by rowid, the insertion order: request ids are
        random and say nothing about it."""
        upto = self._assigned_upto.get(exp.id, 0)
        with self._route_lock:
            rows = self._route_db.execute(
                "SELECT unit, variant, rowid FROM requests WHERE experiment_id = ? AND exposed = 1 "
                "AND unit IS NOT NULL AND rowid > ? ORDER BY rowid", [exp.id, upto]).fetchall()
        assigned = self._assigned.setdefault(exp.id, {})
        logged = self._logged.setdefault(exp.id, set())
        for unit, variant, row_id in rows:
            if unit not in logged:
                logged.add(unit)
                assigned[unit] = variant
            upto = row_id
        self._assigned_upto[exp.id] = upto

    def update_bandits(self, now: float | None = None, *, force: bool = False) -> list[str]:
        """Recompute the weights of running bandit experiments whose interval has passed
        (all of them with `force`); returns their names. Called by the server's reconcile loop."""
        now = time.time() if now is None else now
        due = [c.exp for c in self._table.values() if c.exp.mode == "bandit"
               and c.exp.status == "running"
               and (force or now - (c.exp.weights_changed_at or c.exp.started_at or 0)
                    >= c.exp.bandit_interval_s)]
        if due:
            self._writer.flush()
        for exp in due:
            with self._lock:
                events = latest_feedback(self._db, exp.id)
            cut = {variant for variant, _reason, _ts in exp.cut}
            live = [v.ref for v in exp.variants if v.ref not in cut]
            counts = thumb_counts(events)
            weights, _p_best = thompson_weights(
                [counts.get(ref, (0, 0)) for ref in live], min_share=min(exp.min_share, 1 / len(live)),
                seed=exp.id * 1_000_003 + len(events))
            new = dict(zip(live, weights, strict=True))
            self.set_weights(exp.name, [(v.ref, new.get(v.ref, 0)) for v in exp.variants])
        return [exp.name for exp in due]

    def check_guardrails(self, now: float | None = None, *, force: bool = False) -> list[tuple[str, str, str]]:
        """Cut every non-control variant of a running experiment that breaches one of its
        guardrails (router/guardrails.py); returns (experiment, variant, reason) per cut.
        Each experiment is evaluated at most every GUARDRAIL_CHECK_S unless `force`."""
        now = time.time() if now is None else now
        due = [c for c in self._table.values() if c.exp.status == "running" and c.exp.guardrails
               and (force or now - self._guard_checked.get(c.exp.id, 0.0) >= GUARDRAIL_CHECK_S)]
        if due:
            self._writer.flush()
        cuts = []
        for compiled in due:
            exp = compiled.exp
            self._guard_checked[exp.id] = now
            with self._lock:
                thumbs = thumb_counts(latest_feedback(self._db, exp.id))
                for ref in compiled.refs:
                    if ref == exp.control or ref in compiled.cut:
                        continue
                    reason = breach(self._db, exp.id, ref, exp.guardrails, thumbs.get(ref, (0, 0)))
                    if reason:
                        with write_transaction(self._db):
                            cut_variant(self._db, exp.name, ref, reason)
                            self._on_cut(exp, ref, reason)
                        cuts.append((exp.name, ref, reason))
        if cuts:
            self._reload()
        return cuts

    def check_decisions(self, now: float | None = None) -> list[tuple[str, str]]:
        """Promote the winner of every running auto-promote experiment whose sequential test
        has decided; returns (experiment, promoted variant). Checked every GUARDRAIL_CHECK_S."""
        now = time.time() if now is None else now
        due = [c.exp for c in self._table.values() if c.exp.status == "running"
               and c.exp.auto_promote
               and now - self._decided_checked.get(c.exp.id, 0.0) >= GUARDRAIL_CHECK_S]
        if due:
            self._writer.flush()
        promoted = []
        for exp in due:
            self._decided_checked[exp.id] = now
            with self._lock:
                decided = winner_of(self._db, exp)
            if decided is not None:
                variant, why = decided
                self.promote(exp.name, variant,
                             reason=f"promoted automatically by experiment {exp.name}: {why}")
                promoted.append((exp.name, variant))
        return promoted

    # -- experiments -------------------------------------------------------------------

    def _resolve(self, ref: str) -> str:
        """Pin a ref to name@version through the registry; 'base' (or the base id) is base."""
        if ref in (BASE_REF, self.base_id):
            return BASE_REF
        if self.registry is None:
            if "@" not in ref:
                raise InvalidExperiment(f"variant {ref!r} must name a version (name@version)")
            return ref
        try:
            version = self.registry.get(ref)
        except Exception as exc:  # AdapterNotFound and friends: say why
            raise InvalidExperiment(f"variant {ref!r}: {exc}", param="variants") from None
        if getattr(version, "status", "active") != "active":
            raise InvalidExperiment(
                f"variant {version.ref!r} is {version.status}; only active versions can be served",
                param="variants")
        return version.ref

    def _check_alias(self, alias: str) -> None:
        if alias in (BASE_REF, self.base_id):
            raise InvalidExperiment(f"alias {alias!r} is the base model's id", param="alias")
        if self.registry is not None:
            try:
                self.registry.get(alias)
            except Exception:
                return
            raise InvalidExperiment(
                f"alias {alias!r} is already an adapter name; pick another alias", param="alias")

    def _check_start(self, exp: Experiment) -> None:
        self._check_alias(exp.alias)
        for v in exp.variants:
            if v.target != BASE_REF:
                self._resolve(v.target)

    def create(self, *, alias: str, variants: Sequence[tuple], **options: Any) -> Experiment:
        """Create a draft. `variants`: (ref, weight) or (ref, weight, name, system_prompt) for
        a prompt variant. Options: name, control, metric, retention, score_min, score_max,
        labels, description, salt, mode, min_share, bandit_interval_s, guardrails,
        auto_promote."""
        self._check_alias(alias)
        with self._lock:
            return create_experiment(
                self._db, alias=alias, variants=[VariantIn(*v) for v in variants],
                resolve=self._resolve, **options)

    def get(self, name: str) -> Experiment:
        with self._lock:
            return get_experiment(self._db, name)

    def list(self, statuses: Sequence[str] | None = None) -> list[Experiment]:
        with self._lock:
            return list_experiments(self._db, statuses)

    def _transition(self, name: str, action: str, key_id: str | None = None) -> Experiment:
        with self._lock, write_transaction(self._db):
            before = get_experiment(self._db, name)
            exp = set_status(self._db, name, action,
                             self._check_start if action == "start" else None)
            if action == "start":
                self._on_start(exp, before.status == "draft", key_id)
            elif action == "stop" and before.status in ACTIVE:
                self._on_stop(exp, key_id)
        self._reload()
        return exp

    def start(self, name: str, *, key_id: str | None = None) -> Experiment:
        return self._transition(name, "start", key_id)

    def pause(self, name: str, *, key_id: str | None = None) -> Experiment:
        return self._transition(name, "pause", key_id)

    def stop(self, name: str, *, key_id: str | None = None) -> Experiment:
        return self._transition(name, "stop", key_id)

    def set_weights(self, name: str, weights: Sequence[tuple[str, int]]) -> Experiment:
        """Weights by variant key; a ref that is not a key is resolved (`name` -> name@v)."""
        keys = {v.ref for v in self.get(name).variants}
        resolved = [Variant(r if r in keys else self._resolve(r), w) for r, w in weights]
        with self._lock:
            exp = set_weights(self._db, name, resolved)
        self._reload()
        return exp

    def delete(self, name: str) -> None:
        with self._lock:
            delete_experiment(self._db, name)
        self._reload()

    def delete_guard(self, version: Any) -> str | None:
        """Registry hook: why `version` (an AdapterVersion) may not be archived or deleted, or None.

        Reads the database afresh on its own connection: deletes are rare, and the guard
        must answer from what any process has started, even after this Router closed.
        """
        db = open_db(self.db_path)
        try:
            rows = db.execute(
                "SELECT DISTINCT e.name, e.status FROM experiments e JOIN experiment_variants v "
                "ON v.experiment_id = e.id WHERE COALESCE(v.serves, v.ref) = ? "
                "AND e.status IN ('running', 'paused')", [version.ref],
            ).fetchall()
            aliases = aliases_serving(db, version.ref)
        finally:
            db.close()
        if rows:
            names = ", ".join(f"{n} ({s})" for n, s in rows)
            return f"it is a variant of experiment {names}; stop the experiment first"
        if aliases:
            return (f"alias {', '.join(aliases)} serves it (pointer or routing rule); point the "
                    "alias elsewhere first")
        return None

    # -- feedback and results ----------------------------------------------------------

    def record_feedback(
        self, feedback: FeedbackIn, caller: Caller | None = None, *, now: float | None = None
    ) -> tuple[FeedbackRecord, bool]:
        """(record, created): created False when a retry with the same client_id."""
        with self._lock:
            return record_feedback(
                self._db, feedback, caller or Caller(), flush=self._writer.flush,
                default_score_range=self.score_range, now=now)

    def results(self, name: str) -> dict:
        self._writer.flush()
        with self._lock:
            return compute_results(self._db, get_experiment(self._db, name))

    def export(
        self, fmt: str, *, experiment: str | None = None, adapter: str | None = None
    ) -> ExportResult:
        """Training rows from feedback (see `router.export`); scope: one experiment, one
        adapter (name or name@version), or everything."""
        self._writer.flush()
        with self._lock:
            exp_id = get_experiment(self._db, experiment).id if experiment else None
            return export_feedback(self._db, fmt, experiment_id=exp_id, adapter=adapter,
                                   default_score_range=self.score_range)


__all__ += ["RouterError"]
