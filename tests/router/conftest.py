"""Router test fixtures: a duck-typed registry stand-in and a Router on a temp database for the
library tests, and the real app under uvicorn on loopback for the HTTP tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from router import Router


@dataclass(frozen=True)
class FakeVersion:
    name: str
    version: int
    status: str = "active"

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class FakeRegistry:
    """What the router needs of adapters.Registry: get(ref), add_delete_guard, delete."""

    def __init__(self, refs: list[str]) -> None:
        self.versions: dict[str, FakeVersion] = {}
        for ref in refs:
            name, _, version = ref.partition("@")
            self.versions[ref] = FakeVersion(name, int(version))
        self.guards: list = []
        self.deleted: list[str] = []

    def get(self, ref: str, *, verify: bool = False) -> FakeVersion:
        if "@" in ref:
            if ref in self.versions:
                return self.versions[ref]
        else:
            same = [v for v in self.versions.values() if v.name == ref and v.status == "active"]
            if same:
                return max(same, key=lambda v: v.version)
        raise LookupError(f"no adapter {ref}")

    def add_delete_guard(self, fn) -> None:
        self.guards.append(fn)

    def delete(self, ref: str) -> None:
        version = self.get(ref)
        for guard in self.guards:
            reason = guard(version)
            if reason:
                raise PermissionError(f"cannot delete {version.ref}: {reason}")
        self.deleted.append(version.ref)


REFS = ["support@1", "support@2", "support@3", "other@1"]


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry(REFS)


@pytest.fixture
def router(tmp_path: Path, registry: FakeRegistry) -> Iterator[Router]:
    r = Router(tmp_path / "loraswap.db", registry, base_id="loraswap-base")
    yield r
    r.close()


@dataclass
class LiveServer:
    url: str
    router: Router


@pytest.fixture
def live_server(tmp_path: Path, tiny_base: Path, tiny_loras: list[Path]) -> Iterator[LiveServer]:
    """The real app (fake engine, real registry with support@1..3 and other@1, real SQLite)
    under a real uvicorn on loopback: the router's routes answer through production's error
    handlers."""
    from inprocess import build, serve_on_loopback

    parts = build(tmp_path / "home", tiny_base)
    for i, ref in enumerate(REFS):
        parts.registry.add(tiny_loras[i], ref.partition("@")[0])
    with serve_on_loopback(parts.app) as url:
        yield LiveServer(url, parts.router)


def log_routed(router: Router, alias: str, numbers: range) -> None:
    """Route and log one request per number: request id `r<i>`, unit `u<i>` (what the server
    does for an alias request)."""
    from router import RequestRecord

    for i in numbers:
        route = router.route(alias, f"u{i}")
        router.log_request(RequestRecord(request_id=f"r{i}", model=alias, served=route.target,
                                         route=route))


@pytest.fixture
def routed():
    """`routed(router, alias, numbers)`: see `log_routed`."""
    return log_routed
