"""The cluster's shared soft state: which engine replicas are alive, what each holds, which
versions must leave them, and the adapter files for replicas on other nodes.

One instance (a Ray Serve deployment of one replica, on the control-plane node). Engine
replicas report to it every HEARTBEAT_S and get back the versions to retire; ingress
replicas read the cluster view from it for /admin/engine, /metrics and `loraswap status`.
Nothing here needs to survive a restart: replicas re-report within a heartbeat, and a
retirement is also enforced by the ingress, which never routes to a retired version.
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["HEARTBEAT_S", "ClusterState"]

HEARTBEAT_S = 0.5
STALE_S = 5.0  # a replica silent this long is gone (Ray is replacing it)
RETIRE_KEEP_S = 60.0


class ClusterState:
    def __init__(self) -> None:
        self._replicas: dict[str, tuple[float, dict]] = {}
        self._retired: list[tuple[int, int, float]] = []  # (sequence, version id, when)
        self._seq = 0
        self.files_served = 0

    async def heartbeat(self, info: dict, since: int) -> tuple[int, list[int]]:
        """A replica's report, and the retirements after sequence number `since`: each is
        applied once (a version retired and then requested again is loaded afresh, not
        retired again at every heartbeat)."""
        now = time.time()
        self._replicas[info["replica"]] = (now, info)
        self._retired = [r for r in self._retired if now - r[2] < RETIRE_KEEP_S]
        return self._seq, [vid for seq, vid, _ in self._retired if seq > since]

    async def retire(self, version_id: int) -> None:
        self._seq += 1
        self._retired.append((self._seq, version_id, time.time()))

    async def replicas(self) -> list[dict]:
        now = time.time()
        live = [(t, info) for t, info in self._replicas.values() if now - t < STALE_S]
        self._replicas = {info["replica"]: (t, info) for t, info in live}
        return [dict(info, seen_s_ago=round(now - t, 3)) for t, info in
                sorted(live, key=lambda ti: ti[1].get("started_at", 0))]

    async def files(self, path: str, names: list[str]) -> dict[str, bytes]:
        """The bytes of a version's files, read on this (the control-plane) node; the asking
        replica checks them against the registry's sha256s before writing them."""
        root = Path(path)
        self.files_served += 1
        return {name: (root / name).read_bytes() for name in names}
