"""The ingress side of a scaled-out server: the engine replicas behind the `Engine` interface.

The serving code is the same in both modes; scaled out it gets a `RemoteEngine` (calls to
the engine deployment through a Ray Serve handle) and a `ClusterResidency` (each replica
keeps its own adapter set, so the ingress only names the version, and asks the cluster to
retire one). Requests for an adapter carry its engine name as the multiplexed model id, so
Ray Serve's router prefers a replica that already holds it.

A replica can die under a request (its process killed, its engine core crashed). Ray
drops it from the handle's router at once and Serve starts a replacement. A request that
has sent nothing yet is retried once, on another replica; one that has streamed tokens
cannot be replayed invisibly, so it ends with a retryable 503 (`engine_unavailable`).

Requests beyond what the replicas take at once wait in the handle's router. When a replica
dies under a burst, the rest of the burst queues behind the survivors while the
replacement starts, for as long as the backlog lasts. `queue_timeout` bounds that wait: a
request that has had no output within it is cancelled wherever it is and ends with a
retryable 503 (`queue_timeout`), so no client hangs on a backlog.

There may be several ingress replicas. Each beats to the cluster state with the cluster
view refresh, and learns whether it leads: only the leader runs the experiment decisions
(server/reconcile.py), so a guardrail cut or a promotion happens once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from adapters import AdapterVersion
from server.engine import (
    AdapterLoadError,
    EngineInputError,
    EngineOutput,
    EngineUnavailable,
    GenParams,
)
from server.errors import Conflict, QueueTimeout, ServerError

__all__ = ["ClusterResidency", "RemoteEngine"]

log = logging.getLogger("loraswap.cluster")

REFRESH_S = 0.5
RETRY_PAUSE_S = 0.2
# Exceptions the replica raises on purpose: passed on as they are (a 400, a 409, a 503).
_OURS = (EngineInputError, AdapterLoadError, EngineUnavailable, ServerError)


@dataclass(frozen=True)
class _Limits:
    """What the app reads from `engine.config`: the replicas' LoRA limits."""

    max_loras: int | None
    max_cpu_loras: int


def _replica_lost(exc: BaseException) -> bool:
    from ray import exceptions as rx
    from ray.serve import exceptions as sx

    return isinstance(exc, (rx.RayActorError, sx.ReplicaUnavailableError,
                            sx.DeploymentUnavailableError, rx.ObjectLostError))


def _unwrap(exc: BaseException) -> BaseException:
    """The replica's own exception out of Ray's RayTaskError wrapper."""
    from ray.exceptions import RayTaskError

    cause = getattr(exc, "cause", None) if isinstance(exc, RayTaskError) else None
    return cause if isinstance(cause, _OURS) else exc


class RemoteEngine:
    """`engines`: a handle to the engine deployment; `state`: to the ClusterState one."""

    def __init__(self, engines, state, *, max_loras: int, max_cpu_loras: int,
                 affinity: bool = True, queue_timeout: float = 0.0,
                 ingress: str | None = None) -> None:
        self._engines = engines
        self.ingress = ingress or f"ingress-{uuid.uuid4().hex[:8]}"  # this ingress replica
        self._started_at = time.time()
        self.leads = False  # whether this ingress runs the experiment decisions (its beat says)
        self.ingresses: list[dict] = []
        self.requests = 0  # generations this ingress sent to the engine replicas
        self.affinity = affinity
        self.queue_timeout = queue_timeout  # seconds to a request's first output; 0: none
        self._state = state
        self.config = _Limits(max_loras, max_cpu_loras)
        self.replicas: list[dict] = []
        self.is_cpu = True
        self.guard_active = False
        self.lora_kernels = False
        self.start_seconds: float | None = None
        self.max_loras, self.slots_reason = max_loras or 0, "set" if max_loras else ""
        self.retries = 0  # requests retried on another replica
        self.queue_timeouts = 0  # requests shed after queue_timeout without output
        self._refresh: asyncio.Task | None = None

    async def start(self) -> None:
        """Wait for a replica (Serve started them), then keep the cluster view fresh."""
        first = await self._engines.info.remote()
        self.is_cpu, self.guard_active = first["cpu"], first["cpu_base_guard"]
        self.lora_kernels, self.start_seconds = first["cpu_lora_kernels"], first["start_seconds"]
        self.replica_capacity = first["adapter_capacity"]
        self.max_loras, self.slots_reason = first["max_loras"], first["slots_reason"]
        await self.refresh()
        self._refresh = asyncio.create_task(self._keep_fresh())

    async def refresh(self) -> list[dict]:
        try:
            self.leads, self.ingresses = await self._state.ingress_beat.remote({
                "ingress": self.ingress, "pid": os.getpid(), "node": socket.gethostname(),
                "started_at": self._started_at, "requests": self.requests,
                "retries": self.retries, "queue_timeouts": self.queue_timeouts})
        except Exception:
            self.leads = False  # a lease not confirmed is not held
            raise
        self.replicas = await self._state.replicas.remote()
        return self.replicas

    async def _keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            with contextlib.suppress(Exception):  # the cluster state restarts: next time
                await self.refresh()

    @property
    def running(self) -> bool:
        """The cluster replaces dead replicas itself: the ingress never exits for one."""
        return True

    def unfinished(self) -> int:
        return sum(r.get("running_requests", 0) for r in self.replicas)

    async def loaded_ids(self) -> set[int]:
        return {i for r in self.replicas for i in r.get("engine_ids", [])}

    async def check_health(self) -> None:
        await self._engines.info.remote()

    async def generate(self, request_id: str, prompt_ids: list[int], params: GenParams,
                       version: AdapterVersion | None) -> AsyncIterator[EngineOutput]:
        handle = self._engines.options(stream=True, multiplexed_model_id=self._key(version))
        deadline = self._deadline()
        self.requests += 1
        for attempt in (0, 1):
            sent = False
            try:
                stream = handle.generate.remote(
                    request_id if attempt == 0 else f"{request_id}-retry", prompt_ids,
                    params, version)
                try:
                    first = await self._in_time(stream.__anext__(), stream, deadline)
                except StopAsyncIteration:
                    return
                sent = True
                yield first
                async for out in stream:
                    yield out
                return
            except Exception as exc:
                if not _replica_lost(exc):
                    raise _unwrap(exc) from None
                if sent or attempt == 1:
                    raise EngineUnavailable(
                        "the engine replica serving this request died; retry") from None
                self.retries += 1
                log.warning("request %s: engine replica lost before any output (%s); "
                            "retrying on another replica", request_id, type(exc).__name__)
                await asyncio.sleep(RETRY_PAUSE_S)

    def _deadline(self) -> float | None:
        if not self.queue_timeout:
            return None
        return asyncio.get_running_loop().time() + self.queue_timeout

    async def _in_time(self, awaitable, call, deadline: float | None):
        """`awaitable` (the call's first output, or its result), or a QueueTimeout once the
        deadline passes; the call is then cancelled (unassigned: dropped from the router's
        queue; assigned: aborted on its replica)."""
        if deadline is None:
            return await awaitable
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(awaitable, max(remaining, 0.0))
        except TimeoutError:
            with contextlib.suppress(Exception):
                call.cancel()
            self.queue_timeouts += 1
            raise QueueTimeout(f"no engine replica began this request within "
                               f"{self.queue_timeout:g} s (all busy); retry") from None

    def _key(self, version: AdapterVersion | None) -> str:
        """The multiplexed model id: the version's engine name, or "" (any replica) for the
        base, and for every request under plain routing."""
        return version.ref if version is not None and self.affinity else ""

    async def prepare(self, version: AdapterVersion) -> str | None:
        """Load `version` on the replica the router picks for it (a streamed request fails
        before its 200 if the version cannot load). Under plain routing the request's own
        replica is not known in advance, so nothing is loaded here: the version loads
        where the request lands."""
        if not self.affinity:
            return None
        call = self._engines.options(
            multiplexed_model_id=self._key(version)).prepare.remote(version)
        try:
            return await self._in_time(call, call, self._deadline())
        except Exception as exc:
            if _replica_lost(exc):
                raise EngineUnavailable("no engine replica could load it; retry") from None
            raise _unwrap(exc) from None

    async def retire(self, version_id: int) -> None:
        await self._state.retire.remote(version_id)

    async def scale(self, replicas: int) -> None:
        """Set the engine deployment's replica count, in place: Serve's external-scaler
        call on its controller, which starts or stops replicas without touching the others
        (a redeploy would restart them all). Refused while Serve's autoscaler owns it."""
        import ray
        from ray.serve._private.common import DeploymentID
        from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

        engines = self._engines.deployment_id
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        try:
            await controller.update_deployment_replicas.remote(
                DeploymentID(name=engines.name, app_name=engines.app_name), replicas)
        except Exception as exc:
            if "external_scaler_enabled" in str(exc):
                raise Conflict("the autoscaler sets the replica count "
                               "(min_replicas/max_replicas); change those instead",
                               code="not_supported") from None
            raise

    def shutdown(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()


class ClusterResidency:
    """The `Residency` interface over the replicas' own residencies."""

    def __init__(self, engine: RemoteEngine, verify, capacity: int, metrics,
                 wait_timeout: float = 30.0) -> None:
        self.engine = engine
        self.capacity = getattr(engine, "replica_capacity", capacity)
        self._known: dict[str, AdapterVersion] = {}

    @contextlib.asynccontextmanager
    async def hold(self, v: AdapterVersion | None) -> AsyncIterator[None]:
        if v is not None:
            self._known[v.ref] = v
        yield  # the replica holds the version for the request's length

    def engine_adapter(self, v: AdapterVersion | None) -> AdapterVersion | None:
        return v

    async def ensure_loaded(self, v: AdapterVersion) -> None:
        self._known[v.ref] = v
        await self.engine.prepare(v)

    async def retire(self, version_id: int, reason: str = "retired") -> None:
        await self.engine.retire(version_id)

    async def unload(self, v: AdapterVersion) -> bool:
        loaded = any(v.ref in r.get("loaded", []) for r in self.engine.replicas)
        await self.engine.retire(v.id)
        return loaded

    async def pin(self, v: AdapterVersion, pinned: bool) -> None:
        raise Conflict("pinning is per engine and not offered with engine replicas; "
                       "Ray Serve's affinity routing keeps busy adapters loaded",
                       code="not_supported")

    def holders(self, ref: str) -> list[str]:
        return [r["replica"] for r in self.engine.replicas if ref in r.get("loaded", [])]

    def view(self, version_id: int) -> dict:
        ref = next((v.ref for v in self._known.values() if v.id == version_id), None)
        holders = self.holders(ref) if ref else []
        return {"state": "loaded" if holders else "unloaded", "loaded": bool(holders),
                "pinned": False, "in_flight": 0, "replicas": holders}

    def resident(self) -> list[AdapterVersion]:
        refs = {ref for r in self.engine.replicas for ref in r.get("loaded", [])}
        return [v for ref, v in self._known.items() if ref in refs]

    def lru_order(self) -> list[str]:
        return []
