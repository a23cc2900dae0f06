"""The reconcile loop: the in-memory tables follow SQLite and the files, off the event loop.

Every `interval` seconds, in a worker thread: the model catalog, the router's experiment
table and the API-key cache are re-read (changes another process made, such as the CLI, or
another ingress replica). Then the experiment decisions, only where this process leads (a
single-process server always does; of a scaled-out server's ingress replicas, the one that
holds the lease: server/engine_remote.py): guardrails are checked (a breaching variant loses its traffic),
bandit experiments whose interval has passed get new weights, and auto-promote experiments
whose sequential test has decided end with their winner on the alias. The files of every
resident adapter are checked against their checksums (re-hashed when their stat changed).
Then, on the loop: versions that are no longer active, or whose files changed, leave the
engine once their in-flight requests end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from adapters import AdapterTampered, AdapterVersion, Registry
from router import Router
from server.auth import KeyStore
from server.catalog import ModelCatalog
from server.residency import Residency

__all__ = ["Reconciler"]

log = logging.getLogger("loraswap.models")


class Reconciler:
    def __init__(self, registry: Registry, catalog: ModelCatalog, router: Router, keys: KeyStore,
                 residency: Residency, leads: Callable[[], bool] = lambda: True) -> None:
        self.registry = registry
        self.leads = leads
        self.catalog = catalog
        self.router = router
        self.keys = keys
        self.residency = residency
        self.stopped = False  # set at shutdown: a refresh still running then may hit closed dbs

    def refresh_tables(self) -> None:
        """Blocking: SQL. Start-up calls it directly; the loop calls it in a thread."""
        self.catalog.refresh()
        self.router.refresh()
        self.keys.refresh()
        if self.leads():
            self.decide()

    def decide(self) -> None:
        """The experiment decisions: SQL and writes, made by one process in the cluster."""
        for name, variant, reason in self.router.check_guardrails():
            log.warning("experiment %s: guardrail cut variant %s: %s", name, variant, reason)
        for name in self.router.update_bandits():
            log.info("bandit experiment %s: weights recomputed", name)
        for name, variant in self.router.check_decisions():
            log.warning("experiment %s decided: %s promoted to its alias", name, variant)

    def _tampered(self, resident: list[AdapterVersion]) -> list[AdapterVersion]:
        bad = []
        for v in resident:
            try:
                self.registry.check(v, full=False)
            except AdapterTampered as exc:
                log.warning("%s", exc)
                bad.append(v)
        return bad

    async def once(self) -> None:
        def blocking(resident: list[AdapterVersion]) -> list[AdapterVersion]:
            self.refresh_tables()
            return self._tampered(resident)

        tampered = await asyncio.to_thread(blocking, self.residency.resident())
        for v in tampered:
            await self.residency.retire(v.id, "tampered")
        for v in self.residency.resident():
            if not self.catalog.is_active(v.id):
                await self.residency.retire(v.id, "retired")

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.once()
            except Exception:  # keep reconciling; a locked database is a transient thing
                if not self.stopped:
                    log.exception("reconcile failed")
