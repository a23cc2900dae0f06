"""The reconcile loop's split: every process re-reads the tables, only the leader decides."""

from __future__ import annotations

from types import SimpleNamespace

from server.reconcile import Reconciler


class _Router:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def refresh(self) -> None:
        self.calls.append("refresh")

    def check_guardrails(self) -> list:
        self.calls.append("guardrails")
        return []

    def update_bandits(self) -> list:
        self.calls.append("bandits")
        return []

    def check_decisions(self) -> list:
        self.calls.append("promote")
        return []


def test_a_follower_refreshes_its_tables_and_leaves_the_decisions_to_the_leader():
    leads = [False]
    router = _Router()
    quiet = SimpleNamespace(refresh=lambda: None)
    reconciler = Reconciler(None, quiet, router, quiet, None, leads=lambda: leads[0])
    reconciler.refresh_tables()
    assert router.calls == ["refresh"]
    leads[0] = True  # the lease came to this ingress
    reconciler.refresh_tables()
    assert router.calls == ["refresh", "refresh", "guardrails", "bandits", "promote"]
