"""Which adapter versions are in the engine: one record per version, with an explicit state.

Why our own bookkeeping: vLLM keeps at most `max_cpu_loras` adapters and silently evicts by
its own LRU when asked for more, and a version it evicted would be reloaded from disk
without our sha256 check. So this table is the only way into the engine and never holds more
than `capacity` versions: when every resident is busy (requests in flight) or pinned, a new
load waits for one to free up, and after `wait_timeout` seconds answers 503
`adapter_capacity` instead of overfilling. Every load from disk re-checks the checksums.

States: LOADING (verifying and adding; requests wait on it), LOADED, RETIRING (leaving:
evicted, archived, tampered; removed once its last request ends), FAILED (the load raised;
the record is dropped so the next request tries again).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from adapters import AdapterVersion
from server.errors import AdapterCapacityError, Conflict
from server.metrics import Metrics

__all__ = ["Residency", "Resident", "State"]

log = logging.getLogger("loraswap.models")


class State(enum.Enum):
    LOADING = "loading"
    LOADED = "loaded"
    RETIRING = "retiring"
    FAILED = "failed"


@dataclass(eq=False)
class Resident:
    version: AdapterVersion
    state: State = State.LOADING
    in_flight: int = 0
    pinned: bool = False
    retire_reason: str = ""
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # load finished either way
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # removed from the engine
    error: BaseException | None = None

    def view(self) -> dict:
        return {"state": self.state.value, "loaded": self.state is State.LOADED,
                "pinned": self.pinned, "in_flight": self.in_flight}


class Residency:
    """The engine's adapter set. `verify(version)` runs in a worker thread before every load
    and raises if the files no longer match their checksums."""

    def __init__(self, engine, verify: Callable[[AdapterVersion], None], capacity: int,
                 metrics: Metrics, wait_timeout: float = 30.0) -> None:
        self.engine = engine
        self.verify = verify
        self.capacity = max(1, capacity)
        self.metrics = metrics
        self.wait_timeout = wait_timeout
        self._entries: OrderedDict[int, Resident] = OrderedDict()  # least recently used first
        self._pending: dict[int, Resident] = {}  # waiting for room; not in the engine yet
        self._freed = asyncio.Event()

    # -- the request path ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def hold(self, v: AdapterVersion | None) -> AsyncIterator[None]:
        """Keep `v` in the engine for one request (None, the base model, needs nothing)."""
        if v is None:
            yield
            return
        entry = await self.acquire(v)
        try:
            yield
        finally:
            await self.release(entry)

    async def ensure_loaded(self, v: AdapterVersion) -> None:
        """Load `v` now (a streamed request fails before its 200 if it cannot load)."""
        await self.release(await self.acquire(v))

    async def acquire(self, v: AdapterVersion) -> Resident:
        while True:
            entry = self._entries.get(v.id) or self._pending.get(v.id)
            if entry is None:
                return await self._load(v)
            if entry.state is State.RETIRING:  # on its way out: wait, then load afresh
                await entry.gone.wait()
                continue
            entry.in_flight += 1
            if v.id in self._entries:
                self._entries.move_to_end(v.id)
            if entry.state is State.LOADING:
                await entry.settled.wait()
                if entry.state is State.FAILED:
                    entry.in_flight -= 1
                    assert entry.error is not None
                    raise entry.error
            return entry

    async def release(self, entry: Resident) -> None:
        entry.in_flight -= 1
        if entry.in_flight == 0:
            if entry.state is State.RETIRING:
                await self._remove(entry)
            self._notify()

    # -- loading and making room --------------------------------------------------------------

    async def _load(self, v: AdapterVersion) -> Resident:
        # Pending before the first await, so concurrent first requests share one load; it
        # joins the table (and counts against capacity) only once there is room.
        entry = Resident(v, in_flight=1)
        self._pending[v.id] = entry
        started = time.monotonic()
        try:
            try:
                await self._make_room()
            finally:
                del self._pending[v.id]
            self._entries[v.id] = entry  # no await since the room was made
            await asyncio.to_thread(self.verify, v)  # the checksums, on every load from disk
            await self.engine.add_adapter(v.ref, v.id, v.path)
        except BaseException as exc:
            entry.state, entry.error = State.FAILED, exc
            entry.in_flight -= 1
            if self._entries.get(v.id) is entry:
                del self._entries[v.id]
            entry.settled.set()
            entry.gone.set()
            self._notify()
            raise
        entry.state = State.LOADED
        entry.settled.set()
        elapsed = time.monotonic() - started
        self.metrics.load_seconds.observe(elapsed)
        self.metrics.adapter_loads.inc()
        self.metrics.loaded.set(len(self._entries))
        log.info("loaded %s (engine id %d) in %.1f ms", v.ref, v.id, elapsed * 1000)
        return entry

    def _victim(self) -> Resident | None:
        for entry in self._entries.values():  # oldest use first
            if entry.state is State.LOADED and not entry.pinned and entry.in_flight == 0:
                return entry
        return None

    async def _make_room(self) -> None:
        deadline = time.monotonic() + self.wait_timeout
        while len(self._entries) >= self.capacity:
            victim = self._victim()
            if victim is not None:
                victim.state, victim.retire_reason = State.RETIRING, "lru"
                await self._remove(victim)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AdapterCapacityError(
                    f"all {self.capacity} adapter slots are busy or pinned; try again shortly "
                    "(or unpin an adapter, or raise max_cpu_loras)", param="model")
            freed = self._freed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(freed.wait(), remaining)

    def _notify(self) -> None:
        self._freed.set()
        self._freed = asyncio.Event()

    async def _remove(self, entry: Resident) -> None:
        """Take a RETIRING entry out of the engine; it counts against capacity until gone."""
        v = entry.version
        try:
            await self.engine.remove_adapter(v.id)
        finally:
            if self._entries.get(v.id) is entry:
                del self._entries[v.id]
            entry.gone.set()
            self.metrics.adapter_unloads.labels(entry.retire_reason or "retired").inc()
            self.metrics.loaded.set(len(self._entries))
            log.info("unloaded %s (engine id %d): %s", v.ref, v.id, entry.retire_reason)
            self._notify()

    # -- operators and the reconcile loop ------------------------------------------------------

    async def retire(self, version_id: int, reason: str = "retired") -> None:
        """Stop serving a version: out of the engine now if idle, else after its last request."""
        entry = self._entries.get(version_id)
        if entry is None or entry.state is State.RETIRING:
            return
        if entry.state is State.LOADING:
            await entry.settled.wait()
            if entry.state is not State.LOADED:
                return
        entry.state, entry.retire_reason, entry.pinned = State.RETIRING, reason, False
        if entry.in_flight == 0:
            await self._remove(entry)

    async def unload(self, v: AdapterVersion) -> bool:
        entry = self._entries.get(v.id)
        if entry is None or entry.state is not State.LOADED:
            return False
        if entry.in_flight:
            raise Conflict(f"adapter {v.ref} has requests in flight; try again",
                           code="adapter_busy")
        entry.state, entry.retire_reason = State.RETIRING, "admin"
        await self._remove(entry)
        return True

    async def pin(self, v: AdapterVersion, pinned: bool) -> None:
        """Pinned versions stay loaded: the LRU never evicts them."""
        if not pinned:
            entry = self._entries.get(v.id)
            if entry is not None:
                entry.pinned = False
                self._notify()
            return
        entry = await self.acquire(v)
        entry.pinned = True
        await self.release(entry)

    # -- views ----------------------------------------------------------------------------------

    def engine_adapter(self, v: AdapterVersion | None) -> tuple[str, int, object] | None:
        """How `Engine.generate` names a version: (engine name, int id, files)."""
        return None if v is None else (v.ref, v.id, v.path)

    def view(self, version_id: int) -> dict:
        entry = self._entries.get(version_id)
        if entry is None:
            return {"state": "unloaded", "loaded": False, "pinned": False, "in_flight": 0}
        return entry.view()

    def resident(self) -> list[AdapterVersion]:
        """Loaded versions, least recently used first."""
        return [e.version for e in self._entries.values() if e.state is State.LOADED]

    def lru_order(self) -> list[str]:
        return [e.version.ref for e in self._entries.values()]

    def __len__(self) -> int:
        return len(self._entries)
