"""Which model a request names, and getting that adapter version into the engine.

`ModelManager.resolve` is the one seam between "what the client asked for" and "what runs":
the router (issue 6) plugs alias resolution in there. Loading is lazy, once per version (a lock
per version id, so concurrent first requests load once and other adapters never wait), checked
against the registry's sha256s first, and bounded by an LRU over `max_cpu_loras`. Versions that
leave the registry (archived, deleted, tampered) are removed from the engine once their
in-flight requests finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from adapters import AdapterTampered, AdapterVersion, Registry, RegistryError
from router import Route, Router
from server.engine import AdapterLoadError, Engine
from server.errors import APIError, model_not_found
from server.metrics import Metrics
from server.protocol import ModelCard, ModelList

__all__ = ["ModelManager", "Resolver", "Target", "routed_resolver"]

log = logging.getLogger("loraswap.models")


@dataclass(frozen=True)
class Target:
    """What one request runs on: the base (version None) or one adapter version."""

    requested: str
    model_id: str  # the id the response names: the base id or name@version
    version: AdapterVersion | None = None
    user: str | None = None
    request_id: str = "-"
    route: Route | None = None  # set when `requested` was an experiment alias
    api_key_id: str | None = None

    def headers(self) -> dict[str, str]:
        """Response headers: the request id, the version served and, if routed, the variant."""
        headers = {"X-Request-Id": self.request_id, "X-Loraswap-Model": self.model_id}
        if self.route is not None:
            headers.update(self.route.headers())
        return headers

    @property
    def engine_adapter(self) -> tuple[str, int, Path] | None:
        v = self.version
        return None if v is None else (v.ref, v.id, v.path)


# (requested model, user) -> Target; the router wraps the default one.
Resolver = Callable[[str, "str | None"], Target]


def routed_resolver(models: ModelManager, router: Router) -> Resolver:
    """Experiment aliases first (sticky per user), then adapter names and the base id."""

    def resolve(model: str, user: str | None = None) -> Target:
        route = router.route(model, user)
        if route is None:
            return models.resolve(model, user)
        return dataclasses.replace(models.resolve(route.target, user), requested=model,
                                   route=route)

    return resolve


def tampered_error(exc: AdapterTampered | Exception, ref: str) -> APIError:
    return APIError(409, f"adapter {ref} is refused: its files do not match the checksums "
                    f"recorded at registration ({exc}). Re-register it.", param="model",
                    code="adapter_tampered")


class ModelManager:
    def __init__(self, base_id: str, base_root: str, registry: Registry, engine: Engine,
                 metrics: Metrics, capacity: int) -> None:
        self.base_id = base_id
        self.base_root = base_root
        self.registry = registry
        self.engine = engine
        self.metrics = metrics
        self.capacity = max(1, capacity)
        self._loaded: OrderedDict[int, AdapterVersion] = OrderedDict()  # LRU: oldest first
        self._locks: dict[int, asyncio.Lock] = {}
        self._inflight: Counter[int] = Counter()
        self._pinned: set[int] = set()
        self._retiring: set[int] = set()
        self.resolver: Resolver = self.resolve
        # Experiment aliases to list in /v1/models (the router provides them).
        self.aliases: Callable[[], list[str]] = list

    # -- resolution (the seam) ------------------------------------------------------------------

    def resolve(self, model: str, user: str | None = None) -> Target:
        if model == self.base_id:
            return Target(model, self.base_id, None, user)
        try:
            v = self.registry.get(model)
        except AdapterTampered as exc:
            self._retire_id_by_ref(model)
            raise tampered_error(exc, model) from None
        except RegistryError as exc:
            raise model_not_found(model, str(exc)) from None
        if v.status != "active":
            raise model_not_found(model, f"{v.ref} is {v.status}")
        return Target(model, v.ref, v, user)

    # -- loading --------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def use(self, target: Target) -> AsyncIterator[None]:
        """Hold the target's adapter in the engine for the duration of one request."""
        v = target.version
        if v is None:
            yield
            return
        await self.ensure_loaded(v)
        self._inflight[v.id] += 1
        try:
            yield
        finally:
            self._inflight[v.id] -= 1
            if self._inflight[v.id] <= 0:
                del self._inflight[v.id]
                if v.id in self._retiring:
                    await self._unload(v.id, "retired")

    async def ensure_loaded(self, v: AdapterVersion) -> bool:
        """Load `v` unless it is loaded; True when this call loaded it."""
        if v.id in self._loaded:
            self._loaded.move_to_end(v.id)
            return False
        lock = self._locks.setdefault(v.id, asyncio.Lock())
        async with lock:
            if v.id in self._loaded:
                return False
            started = time.monotonic()
            try:  # full re-hash once per load, not per request
                await asyncio.to_thread(self.registry.get, v.ref, verify=True)
            except AdapterTampered as exc:
                raise tampered_error(exc, v.ref) from None
            except RegistryError as exc:
                raise model_not_found(v.ref, str(exc)) from None
            await self._make_room()
            try:
                await self.engine.add_adapter(v.ref, v.id, v.path)
            except AdapterLoadError as exc:
                raise APIError(500, str(exc), param="model", code="adapter_load_failed",
                               type="server_error") from None
            self._retiring.discard(v.id)
            self._loaded[v.id] = v
            elapsed = time.monotonic() - started
            self.metrics.load_seconds.observe(elapsed)
            self.metrics.adapter_loads.inc()
            self.metrics.loaded.set(len(self._loaded))
            log.info("loaded %s (engine id %d) in %.1f ms", v.ref, v.id, elapsed * 1000)
            return True

    async def _make_room(self) -> None:
        while len(self._loaded) >= self.capacity:
            victim = next((i for i in self._loaded
                           if i not in self._pinned and not self._inflight.get(i)), None)
            if victim is None:  # all busy or pinned: let the engine's own cache cope
                log.warning("adapter cache full (%d) and every entry busy or pinned", self.capacity)
                return
            await self._unload(victim, "lru")

    async def _unload(self, int_id: int, reason: str) -> bool:
        v = self._loaded.pop(int_id, None)
        self._retiring.discard(int_id)
        self._pinned.discard(int_id)
        self._locks.pop(int_id, None)
        if v is None:
            return False
        await self.engine.remove_adapter(int_id)
        self.metrics.adapter_unloads.labels(reason).inc()
        self.metrics.loaded.set(len(self._loaded))
        log.info("unloaded %s (engine id %d): %s", v.ref, int_id, reason)
        return True

    async def retire(self, int_id: int) -> None:
        """Stop serving `int_id`: unload now if idle, else when its last request ends."""
        if int_id not in self._loaded:
            return
        if self._inflight.get(int_id):
            self._retiring.add(int_id)
        else:
            await self._unload(int_id, "retired")

    def _retire_id_by_ref(self, ref: str) -> None:
        for i, v in list(self._loaded.items()):
            if v.ref == ref or v.name == ref:
                self._retiring.add(i)
                if not self._inflight.get(i):
                    asyncio.get_running_loop().create_task(self._unload(i, "tampered"))

    async def unload(self, v: AdapterVersion) -> bool:
        if self._inflight.get(v.id):
            raise APIError(409, f"adapter {v.ref} has requests in flight; try again",
                           code="adapter_busy")
        return await self._unload(v.id, "admin")

    async def pin(self, v: AdapterVersion, pinned: bool) -> None:
        """Pinned versions stay loaded: never evicted by the LRU."""
        if pinned:
            await self.ensure_loaded(v)
            self._pinned.add(v.id)
        else:
            self._pinned.discard(v.id)

    def state(self, int_id: int) -> dict:
        return {"loaded": int_id in self._loaded, "pinned": int_id in self._pinned,
                "in_flight": self._inflight.get(int_id, 0)}

    def loaded(self) -> list[AdapterVersion]:
        return list(self._loaded.values())

    async def reconcile(self) -> None:
        """Drop loaded versions the registry no longer serves (changed by another process)."""
        if not self._loaded:
            return
        active = {v.id for v in await asyncio.to_thread(self.registry.list)}
        for int_id in list(self._loaded):
            if int_id not in active:
                await self.retire(int_id)

    async def run_reconcile(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reconcile()
            except Exception:  # keep reconciling; a locked database is a transient thing
                log.exception("reconcile failed")

    async def load_all(self) -> None:
        for v in self.registry.list()[: self.capacity]:
            try:
                await self.ensure_loaded(v)
            except APIError as exc:
                log.warning("not loading %s: %s", v.ref, exc.message)

    # -- listing --------------------------------------------------------------------------------

    def list_models(self) -> ModelList:
        created = int(time.time())
        cards = [ModelCard(id=self.base_id, created=created, root=self.base_root)]
        latest: dict[str, AdapterVersion] = {}
        for v in self.registry.list():
            cards.append(ModelCard(id=v.ref, created=_ts(v.created_at, created),
                                   root=str(v.path), parent=self.base_id))
            latest[v.name] = v
        for name, v in latest.items():
            cards.append(ModelCard(id=name, created=_ts(v.created_at, created),
                                   root=str(v.path), parent=self.base_id))
        for alias in self.aliases():
            cards.append(ModelCard(id=alias, created=created, root="experiment",
                                   parent=self.base_id))
        return ModelList(data=cards)


def _ts(iso: str, default: int) -> int:
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return default
