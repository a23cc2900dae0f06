"""The engine's adapter set, one rule a test: LRU order, pinned and busy versions stay, the
capacity is never exceeded (a request waits, then gets a 503), every load re-checks sha256s."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from inprocess import CAPACITY_ONLY, FakeEngine

from adapters import AdapterTampered, AdapterVersion, VerifyProblem
from server.engine import EngineConfig
from server.errors import AdapterCapacityError, Conflict
from server.metrics import Metrics
from server.residency import Residency


def version(i: int, path: Path) -> AdapterVersion:
    return AdapterVersion(id=i, name=f"v{i}", version=1, path=path, status="active", rank=8,
                          alpha=16, target_modules=["q_proj"], size_bytes=1, files={},
                          base_fingerprint="", base_name="", source_kind="imported",
                          description="", tags=[], metrics={}, lineage={}, created_at="")


class Harness:
    def __init__(self, tiny_loras: list[Path], capacity: int, wait: float = 0.3) -> None:
        self.engine = FakeEngine(EngineConfig(model=Path("."), max_cpu_loras=capacity,
                                              **CAPACITY_ONLY))
        self.verified: list[str] = []
        self.tampered: set[str] = set()
        self.versions = [version(i + 1, tiny_loras[i % len(tiny_loras)]) for i in range(8)]
        self.res = Residency(self.engine, self.verify, capacity, Metrics(), wait_timeout=wait)

    def verify(self, v: AdapterVersion) -> None:
        self.verified.append(v.ref)
        if v.ref in self.tampered:
            raise AdapterTampered(v.ref, [VerifyProblem(v.ref, "adapter_model.safetensors",
                                                        "aa" * 32, "bb" * 32)])

    def v(self, i: int) -> AdapterVersion:
        return self.versions[i - 1]


def run(coro):
    return asyncio.run(coro)


def test_lru_evicts_the_least_recently_used(tiny_loras):
    h = Harness(tiny_loras, capacity=2)

    async def main():
        await h.res.ensure_loaded(h.v(1))
        await h.res.ensure_loaded(h.v(2))
        await h.res.ensure_loaded(h.v(1))  # v1 is now the most recent
        await h.res.ensure_loaded(h.v(3))
        return h.res.lru_order()

    assert run(main()) == ["v1@1", "v3@1"]
    assert h.engine.removes == ["v2@1"]


def test_pinned_versions_are_never_evicted(tiny_loras):
    h = Harness(tiny_loras, capacity=2)

    async def main():
        await h.res.pin(h.v(1), True)
        for i in (2, 3, 4, 5):
            await h.res.ensure_loaded(h.v(i))
        assert "v1@1" in h.engine.loaded.values()
        await h.res.pin(h.v(1), False)
        await h.res.ensure_loaded(h.v(6))

    run(main())
    assert "v1@1" in h.engine.removes  # unpinned, it is evictable again
    assert h.engine.removes.count("v1@1") == 1


def test_busy_versions_are_never_evicted_and_the_capacity_holds(tiny_loras):
    h = Harness(tiny_loras, capacity=2, wait=0.2)

    async def main():
        a = await h.res.acquire(h.v(1))
        b = await h.res.acquire(h.v(2))
        with pytest.raises(AdapterCapacityError):  # both busy: wait, then a clear 503
            await h.res.ensure_loaded(h.v(3))
        assert set(h.engine.loaded.values()) == {"v1@1", "v2@1"}
        assert len(h.engine.loaded) <= 2

        async def later_release():
            await asyncio.sleep(0.05)
            await h.res.release(a)

        h.res.wait_timeout = 5
        await asyncio.gather(later_release(), h.res.ensure_loaded(h.v(3)))  # waits, then loads
        assert set(h.engine.loaded.values()) == {"v2@1", "v3@1"}  # busy v2 stayed
        await h.res.release(b)

    run(main())


def test_capacity_is_never_exceeded_under_concurrent_load(tiny_loras):
    h = Harness(tiny_loras, capacity=3, wait=5)
    h.engine.token_delay = 0

    async def one(i: int):
        async with h.res.hold(h.v(1 + i % 8)):
            assert len(h.engine.loaded) <= 3  # FakeEngine also asserts this on every add
            await asyncio.sleep(0.001 * (i % 5))

    async def main():
        await asyncio.gather(*(one(i) for i in range(200)))

    run(main())
    assert len(h.res) <= 3 and all(e == 0 for e in [h.res.view(v.id)["in_flight"]
                                                     for v in h.versions])


def test_every_load_from_disk_rechecks_the_checksums(tiny_loras):
    h = Harness(tiny_loras, capacity=1)

    async def main():
        await h.res.ensure_loaded(h.v(1))
        await h.res.ensure_loaded(h.v(1))  # resident: no reload, no re-check
        await h.res.ensure_loaded(h.v(2))  # evicts v1
        h.tampered.add("v1@1")
        with pytest.raises(AdapterTampered):
            await h.res.ensure_loaded(h.v(1))  # back from disk: checked, refused

    run(main())
    assert h.verified == ["v1@1", "v2@1", "v1@1"]
    assert "v1@1" not in h.engine.loaded.values() and h.res.view(1)["state"] == "unloaded"


def test_concurrent_first_requests_share_one_load(tiny_loras):
    h = Harness(tiny_loras, capacity=2)

    async def main():
        await asyncio.gather(*(h.res.ensure_loaded(h.v(1)) for _ in range(10)))

    run(main())
    assert h.engine.adds == ["v1@1"] and h.verified == ["v1@1"]


def test_retire_waits_for_the_last_request_and_unload_refuses_busy(tiny_loras):
    h = Harness(tiny_loras, capacity=2)

    async def main():
        held = await h.res.acquire(h.v(1))
        with pytest.raises(Conflict):
            await h.res.unload(h.v(1))
        await h.res.retire(h.v(1).id)
        assert h.res.view(1)["state"] == "retiring" and "v1@1" in h.engine.loaded.values()
        await h.res.release(held)
        assert "v1@1" not in h.engine.loaded.values()

    run(main())
