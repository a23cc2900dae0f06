"""The scaled-out server's soft state and thread binding, without Ray (plain objects)."""

from __future__ import annotations

import asyncio

from server.cluster_state import ClusterState


def _info(replica: str, started: float, loaded: list[str]) -> dict:
    return {"replica": replica, "started_at": started, "loaded": loaded}


def test_each_retirement_reaches_each_replica_once():
    async def run():
        state = ClusterState()
        seq_a, first = await state.heartbeat(_info("a", 1, ["x@1"]), 0)
        await state.retire(5)
        await state.retire(6)
        seq_a, retired = await state.heartbeat(_info("a", 1, []), seq_a)
        again = await state.heartbeat(_info("a", 1, []), seq_a)
        late = await state.heartbeat(_info("b", 2, []), 0)  # a replica that joined later
        return first, retired, again[1], late[1]

    first, retired, again, late = asyncio.run(run())
    assert first == [] and retired == [5, 6] and again == []
    assert late == [5, 6]  # it may have loaded them before it reported


def test_the_cluster_view_lists_live_replicas_oldest_first_and_drops_silent_ones(monkeypatch):
    import server.cluster_state as cs

    now = [1000.0]
    monkeypatch.setattr(cs.time, "time", lambda: now[0])

    async def run():
        state = ClusterState()
        await state.heartbeat(_info("young", 20, ["b@1"]), 0)
        await state.heartbeat(_info("old", 10, ["a@1"]), 0)
        view = await state.replicas()
        now[0] += cs.STALE_S + 1
        await state.heartbeat(_info("old", 10, ["a@1"]), 0)
        return view, await state.replicas()

    view, later = asyncio.run(run())
    assert [r["replica"] for r in view] == ["old", "young"]
    assert all(r["seen_s_ago"] == 0 for r in view)
    assert [r["replica"] for r in later] == ["old"]  # "young" stopped reporting


def test_files_are_served_from_the_control_planes_disk(tmp_path):
    (tmp_path / "adapter_config.json").write_bytes(b"{}")
    blobs = asyncio.run(ClusterState().files(str(tmp_path), ["adapter_config.json"]))
    assert blobs == {"adapter_config.json": b"{}"}


def test_replicas_on_one_node_bind_disjoint_cores():
    from server.engine_replica import bind_threads

    assert bind_threads(0, 1, cores=2) == "0" and bind_threads(1, 1, cores=2) == "1"
    assert bind_threads(0, 2, cores=8) == "0,1" and bind_threads(1, 2, cores=8) == "2,3"
    assert bind_threads(2, 1, cores=2) == "0"  # more replicas than cores: they share
    assert bind_threads(0, 16, cores=4) == "0,1,2,3"  # never more threads than cores


def _ingress(name: str) -> dict:
    return {"ingress": name, "pid": 1, "node": "n", "started_at": 0, "requests": 0}


def test_one_ingress_leads_until_it_falls_silent(monkeypatch):
    import server.cluster_state as cs

    now = [1000.0]
    monkeypatch.setattr(cs.time, "time", lambda: now[0])

    async def run():
        state = ClusterState()
        first = [(await state.ingress_beat(_ingress(n)))[0] for n in ("a", "b", "a", "b")]
        now[0] += cs.LEASE_S - 0.5  # a still beats in time ...
        kept = (await state.ingress_beat(_ingress("a")))[0]
        now[0] += cs.LEASE_S + 0.5  # ... then stops: b takes over at its next beat
        taken, view = await state.ingress_beat(_ingress("b"))
        return first, kept, taken, view, (await state.ingress_beat(_ingress("a")))[0]

    first, kept, taken, view, old_leader = asyncio.run(run())
    assert first == [True, False, True, False] and kept
    assert taken and [(i["ingress"], i["leader"]) for i in view] == [("a", False), ("b", True)]
    assert old_leader is False  # a comes back as a follower
