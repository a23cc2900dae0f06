"""The cluster's shared soft state: which engine replicas are alive, what each holds, which
versions must leave them, and the adapter files for replicas on other nodes.

One instance (a Ray Serve deployment of one replica, on the control-plane node). Engine
replicas report to it every HEARTBEAT_S and get back the versions to retire; ingress
replicas read the cluster view from it for /admin/engine, /metrics and `loraswap status`.

Ingress replicas beat here too, and one of them holds the lease: the leader runs the
experiment decisions (guardrail cuts, bandit weights, auto-promotion), which must happen
once, not once per ingress. A leader silent for LEASE_S loses the lease to the next ingress
that beats.

Nothing here needs to survive a restart: replicas re-report within a heartbeat, a new
leader is chosen at the next beat, and a retirement is also enforced by the ingress, which
never routes to a retired version.
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["HEARTBEAT_S", "LEASE_S", "ClusterState"]

HEARTBEAT_S = 0.5
STALE_S = 5.0  # a replica silent this long is gone (Ray is replacing it)
RETIRE_KEEP_S = 60.0
LEASE_S = 3.0  # the leading ingress keeps the lease while it beats within this


class ClusterState:
    def __init__(self) -> None:
        self._replicas: dict[str, tuple[float, dict]] = {}
        self._retired: list[tuple[int, int, float]] = []  # (sequence, version id, when)
        self._seq = 0
        self.files_served = 0
        self._ingresses: dict[str, tuple[float, dict]] = {}
        self._leader: tuple[str | None, float] = (None, 0.0)  # (ingress, lease ends)

    async def heartbeat(self, info: dict, since: int) -> tuple[int, list[int]]:
        """A replica's report, and the retirements after sequence number `since`: each is
        applied once (a version retired and then requested again is loaded afresh, not
        retired again at every heartbeat)."""
        now = time.time()
        self._replicas[info["replica"]] = (now, info)
        self._retired = [r for r in self._retired if now - r[2] < RETIRE_KEEP_S]
        return self._seq, [vid for seq, vid, _ in self._retired if seq > since]

    async def ingress_beat(self, info: dict) -> tuple[bool, list[dict]]:
        """An ingress replica's report (`info["ingress"]` names it): whether it leads now,
        and every live ingress as last reported."""
        now = time.time()
        me = info["ingress"]
        self._ingresses[me] = (now, info)
        leader, ends = self._leader
        if leader == me or now >= ends:
            self._leader = leader, ends = me, now + LEASE_S
        live = {k: (t, i) for k, (t, i) in self._ingresses.items() if now - t < STALE_S}
        self._ingresses = live
        return leader == me, [dict(i, leader=k == leader, seen_s_ago=round(now - t, 3))
                              for k, (t, i) in sorted(live.items(), key=lambda kv: kv[0])]

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
