"""One engine replica of the Ray Serve deployment: an `Engine` and its own `Residency`.

Scaled out, each replica holds its own adapter set, so residency lives here, not in the
ingress. Ray Serve's model multiplexing keys each adapter version by its engine name
(`name@version`): the router sends a request to a replica that already holds that version
unless it is overloaded, and replicas report what they hold every 0.1 s. Ray keeps an LRU
of `capacity` versions per replica; when it drops one, the version is retired here, which
takes it out of the engine once its last request ends. Both lists are the same length, so
they agree on what is loaded.

Every load re-checks the version's sha256s against the checksums the ingress sent with the
request (they come from the registry's record), before the engine reads a byte: a replica
never serves files that do not match. The files are read where the registry stored them
(one node, or a shared filesystem); `fetch` is how a replica on another node gets them.

Ray is imported lazily: only `loraswap/scale_out.py` decides to run on Ray, and this module
stays importable (and testable) without it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from adapters import AdapterVersion
from adapters.replica_files import ReplicaFiles
from server.cluster_state import HEARTBEAT_S
from server.engine import (
    DIE_WITH_PARENT_ENV,
    WORKER_SPIN_ENV,
    Engine,
    EngineConfig,
    EngineOutput,
    GenParams,
)
from server.metrics import Metrics
from server.residency import Residency

__all__ = ["EngineReplica", "bind_threads"]

log = logging.getLogger("loraswap.replica")

WORKER_SPIN_S = 0.01  # vLLM's is 1 s; see server/engine.py, WORKER_SPIN_ENV


def bind_threads(local_rank: int, threads: int, cores: int | None = None) -> str:
    """The cores a replica's engine binds its OpenMP threads to (`VLLM_CPU_OMP_THREADS_BIND`):
    consecutive blocks by the replica's rank on its node, so two replicas do not both bind
    the same cores (vLLM's `auto` would give every replica the same ones)."""
    cores = cores or os.cpu_count() or 1
    threads = max(1, min(threads, cores))
    first = (local_rank * threads) % cores
    picked = [(first + i) % cores for i in range(threads)]
    return ",".join(str(c) for c in sorted(set(picked)))


class _Held:
    """What Ray's multiplex cache holds for one version: dropping it retires the version.
    Ray calls `__del__` itself on eviction (in a worker thread) and the garbage collector
    may call it again later: only the first call acts."""

    def __init__(self, version_id: int, retire: Callable[[int], None]) -> None:
        self.version_id = version_id
        self._retire: Callable[[int], None] | None = retire

    def __del__(self) -> None:
        retire, self._retire = self._retire, None
        if retire is not None:
            retire(self.version_id)


class EngineReplica:
    """The engine deployment's class (Ray Serve wraps it in `loraswap/scale_out.py`)."""

    async def __init__(self, config: EngineConfig, *, capacity: int, threads: int,
                       state=None, cache_dir: str | None = None,
                       wait_timeout: float = 30.0) -> None:
        """`state`: a handle to the ClusterState deployment (heartbeats, retirements, files);
        `cache_dir`: where versions fetched from the control plane are kept."""
        from ray import serve

        ctx = serve.get_replica_context()
        self.replica = ctx.replica_id.unique_id
        rank = getattr(ctx.rank, "local_rank", 0) if ctx.rank is not None else 0
        if "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = bind_threads(rank, threads)
        self.pid = os.getpid()
        self.node = os.uname().nodename
        # Its engine core must not outlive it (server/engine.py, die_with_parent).
        os.environ[DIE_WITH_PARENT_ENV] = "1"
        # Several engines share the machine: a second of busy-polling after every message
        # from each held the cores the proxy and ingress needed (requests stalled ~1 s).
        os.environ.setdefault(WORKER_SPIN_ENV, str(WORKER_SPIN_S))
        self.engine = Engine(config)
        await self.engine.start()
        self.capacity = max(1, capacity - (1 if self.engine.guard_active else 0))
        self.metrics = Metrics()
        self.files = ReplicaFiles(Path(cache_dir) if cache_dir else None)
        self.state = state
        self.residency = Residency(self.engine, self._verify, self.capacity, self.metrics,
                                   wait_timeout)
        self._loop = asyncio.get_running_loop()
        self._versions: dict[str, AdapterVersion] = {}  # multiplexed model id -> version
        self._origin: dict[int, AdapterVersion] = {}  # as the registry stored it
        self.loads = 0
        self.started_at = time.time()
        self._seq = 0

        async def load_multiplexed(model_id: str) -> _Held:
            # A plain function, not the bound method: Ray keeps its LRU as an attribute
            # of what it wraps, and a bound method takes no attributes.
            return await self._load_version(model_id)

        self._load = serve.multiplexed(max_num_models_per_replica=self.capacity)(
            load_multiplexed)
        self._beat = asyncio.create_task(self._heartbeats()) if state is not None else None
        log.info("engine replica %s (pid %d, rank %d, threads bound to %s) ready in %.1f s",
                 self.replica, self.pid, rank, os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),
                 self.engine.start_seconds or 0)

    # -- adapters ------------------------------------------------------------------------

    def _verify(self, v: AdapterVersion) -> None:
        """In a worker thread, before every load: the files match the registry's sha256s
        (fetched first if this node lacks them)."""
        self.files.verify(self._origin.get(v.id, v), self._fetch_blocking)
        self.loads += 1

    def _fetch_blocking(self, v: AdapterVersion) -> dict[str, bytes]:
        if self.state is None:
            raise FileNotFoundError(f"{v.ref}: its files are not on this node and no "
                                    "control plane was given to fetch them from")

        async def fetch() -> dict[str, bytes]:
            return await self.state.files.remote(str(v.path), list(v.files))

        log.info("fetching %s from the control plane", v.ref)
        return asyncio.run_coroutine_threadsafe(fetch(), self._loop).result(120)

    async def _heartbeats(self) -> None:
        """Report to the cluster state; apply the retirements it hands back."""
        while True:
            try:
                self._seq, retired = await self.state.heartbeat.remote(await self.info(),
                                                                       self._seq)
                for version_id in retired:
                    await self.residency.retire(version_id, "retired")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the state replica restarting: try again next beat
                log.debug("heartbeat failed: %s", exc)
            await asyncio.sleep(HEARTBEAT_S)

    async def _load_version(self, model_id: str) -> _Held:
        v = self._versions[model_id]
        await self.residency.ensure_loaded(self.files.local(v))
        return _Held(v.id, self._retire_soon)

    def _retire_soon(self, version_id: int) -> None:
        asyncio.run_coroutine_threadsafe(self.residency.retire(version_id, "lru"), self._loop)

    async def _adapter(self, v: AdapterVersion | None) -> AdapterVersion | None:
        if v is None:
            return None
        from ray import serve

        self._origin[v.id] = v
        model_id = serve.get_multiplexed_model_id()
        if model_id:  # affinity routing: Ray's LRU of `capacity` versions decides
            self._versions[model_id] = v
            await self._load(model_id)
        else:  # plain routing: this replica's own residency keeps its LRU
            await self.residency.ensure_loaded(self.files.local(v))
        return self.files.local(v)

    # -- the request path ----------------------------------------------------------------

    async def generate(self, request_id: str, prompt_ids: list[int], params: GenParams,
                       version: AdapterVersion | None) -> AsyncIterator[EngineOutput]:
        local = await self._adapter(version)
        async with self.residency.hold(local):
            adapter = None if local is None else (local.ref, local.id, local.path)
            async for out in self.engine.generate(request_id, prompt_ids, params, adapter):
                yield out

    async def prepare(self, version: AdapterVersion) -> str:
        """Load `version` here (the router picked this replica for it); its replica id."""
        await self._adapter(version)
        return self.replica

    async def retire(self, version_id: int) -> None:
        await self.residency.retire(version_id)

    # -- operations ----------------------------------------------------------------------

    async def info(self) -> dict:
        """The heartbeat's report. It reads only this process's records: asking the engine
        (`loaded_ids`) wakes its worker, and vLLM's CPU worker busy-polls for a second after
        every message, so a twice-a-second question keeps a core spinning for nothing."""
        resident = self.residency.resident()
        return {
            "replica": self.replica, "pid": self.pid, "node": self.node,
            "running": self.engine.running, "adapter_capacity": self.capacity,
            "loaded": [v.ref for v in resident],
            "engine_ids": sorted(v.id for v in resident),
            "running_requests": self.engine.unfinished(), "adapter_loads": self.loads,
            "start_seconds": self.engine.start_seconds, "started_at": self.started_at,
            "cpu": self.engine.is_cpu, "cpu_base_guard": self.engine.guard_active,
            "cpu_lora_kernels": self.engine.lora_kernels, "max_loras": self.engine.max_loras,
            "slots_reason": self.engine.slots_reason,
        }

    async def check_health(self) -> None:
        """Ray Serve calls this every few seconds; raising gets the replica replaced."""
        if not self.engine.running:
            raise RuntimeError("the engine process died")

    def __del__(self) -> None:
        beat = getattr(self, "_beat", None)
        if beat is not None:
            beat.cancel()
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


