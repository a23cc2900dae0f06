"""`loraswap serve --replicas N`: the same server on Ray Serve, with N engine replicas.

Three deployments (docs/scaling.md):
- `ingress`: the FastAPI app with the whole API, built by `wiring.build_app` exactly as the
  single-process server is, but over a `RemoteEngine` (server/engine_remote.py);
  `ingress_replicas` of them, one of which leads (runs the experiment decisions);
- `engines`: N replicas, each one vLLM engine with its own adapter set
  (server/engine_replica.py), routed to by adapter affinity (Serve's model multiplexing);
- `cluster_state`: one replica with the replicas' heartbeats, retirements and adapter files
  (server/cluster_state.py).

The ingress and the cluster state hold the control plane (the SQLite database under
`home`), so a Ray custom resource, CONTROL_PLANE, pins them to the node that has it: a
locally started Ray gives this node one; on an existing cluster the operator starts the
head with it (`ray start --head --resources '{"loraswap_control_plane": 1}'`).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from typing import Any

from loraswap.settings import Settings

__all__ = ["CONTROL_PLANE", "build_application", "proxy_middlewares", "serve_on_ray"]

log = logging.getLogger("loraswap.scale_out")

CONTROL_PLANE = "loraswap_control_plane"
APP_NAME = "loraswap"
_PIN = {CONTROL_PLANE: 0.01}


# Ray Serve's HTTP proxy calls this at start for extra middlewares (set in the environment
# Ray's processes start with: serve_on_ray does it for a local Ray; an existing cluster's
# nodes need it in theirs, docs/scaling.md).
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "loraswap.scale_out:proxy_middlewares"


class OneRequestId:
    """Ray Serve's proxy appends its own X-Request-ID to every response, after the one our
    app set (the id the request log and feedback know). Two values would reach clients
    joined ("req_..., 4f2c..."), so only the first, ours, is kept. The proxy wraps this
    around its own middleware, so it sees the response after the proxy's header is added."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_ours(message) -> None:
            if message["type"] == "http.response.start":
                kept, seen = [], False
                for key, value in message.get("headers", []):
                    if key.lower() == b"x-request-id":
                        if seen:
                            continue
                        seen = True
                    kept.append((key, value))
                message["headers"] = kept
            await send(message)

        await self.app(scope, receive, send_ours)


def proxy_middlewares() -> list:
    from starlette.middleware import Middleware

    return [Middleware(OneRequestId)]


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no torch, no CUDA
        return False


def _ingress_class():
    from ray import serve

    @serve.ingress()
    class Ingress:
        """One ingress replica: the FastAPI app over the engine replicas."""

        def __init__(self, settings: Settings, engines, state) -> None:
            self.settings, self.engines, self.state = settings, engines, state

        def __serve_build_asgi_app__(self):
            from ray import serve

            from loraswap.wiring import build_app
            from server.engine_remote import ClusterResidency, RemoteEngine

            engine = RemoteEngine(self.engines, self.state,
                                  ingress=serve.get_replica_context().replica_id.unique_id,
                                  max_loras=self.settings.max_loras,
                                  max_cpu_loras=self.settings.max_cpu_loras,
                                  affinity=self.settings.affinity_routing,
                                  queue_timeout=self.settings.queue_timeout)
            return build_app(self.settings, engine=engine, residency_class=ClusterResidency)

    return Ingress


def engine_options(settings: Settings) -> dict[str, Any]:
    """The engine deployment's replicas, resources and autoscaling, from the settings."""
    gpus = settings.replica_gpus if settings.replica_gpus is not None else (
        1.0 if _cuda() else 0.0)
    threads = max(1, math.ceil(settings.replica_cpus))
    opts: dict[str, Any] = {
        "name": "engines",
        "ray_actor_options": {
            "num_cpus": settings.replica_cpus, "num_gpus": gpus,
            "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(threads)}}},
        "max_ongoing_requests": max(8, settings.max_num_seqs * 2),
        "health_check_period_s": 2.0,
        "health_check_timeout_s": 30.0,
        "graceful_shutdown_timeout_s": settings.shutdown_timeout,
    }
    if settings.min_replicas is not None or settings.max_replicas is not None:
        lo = settings.min_replicas if settings.min_replicas is not None else 1
        hi = settings.max_replicas if settings.max_replicas is not None else max(
            lo, settings.replicas or 1)
        opts["autoscaling_config"] = {
            "min_replicas": lo, "max_replicas": hi,
            "initial_replicas": min(max(settings.replicas or lo, lo), hi),
            "target_ongoing_requests": settings.target_ongoing_requests}
    else:
        opts["num_replicas"] = settings.replicas or 1
    return opts


def build_application(settings: Settings):
    """The Serve application (not yet run)."""
    from ray import serve

    from loraswap.wiring import engine_config
    from server.cluster_state import ClusterState
    from server.engine_replica import EngineReplica

    opts = engine_options(settings)
    state = serve.deployment(ClusterState, name="cluster_state", num_replicas=1,
                             ray_actor_options={"num_cpus": 0, "resources": _PIN},
                             logging_config={"enable_access_log": False}).bind()
    engines = serve.deployment(EngineReplica, **opts).bind(
        engine_config(settings), capacity=settings.max_cpu_loras,
        threads=int(opts["ray_actor_options"]["runtime_env"]["env_vars"]["OMP_NUM_THREADS"]),
        state=state, cache_dir=str(settings.home / "replica-cache"),
        wait_timeout=settings.adapter_wait_timeout)
    ingress = serve.deployment(_ingress_class(), name="ingress",
                               num_replicas=settings.ingress_replicas,
                               max_ongoing_requests=1000,
                               graceful_shutdown_timeout_s=settings.shutdown_timeout,
                               ray_actor_options={"num_cpus": 0, "resources": _PIN})
    return ingress.bind(settings, engines, state)


def _host(settings: Settings) -> str:
    from server.app import is_loopback
    from server.auth import KeyStore

    keys = KeyStore(settings.db_path)
    try:
        configured = keys.any_active()
    finally:
        keys.close()
    if not configured and not is_loopback(settings.host):
        log.warning("no API keys configured: binding to 127.0.0.1 instead of %s",
                    settings.host)
        return "127.0.0.1"
    return settings.host


def serve_on_ray(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT, then drain and stop the application; the exit status."""
    import ray
    from ray import serve

    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = _host(settings)
    os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)  # inherited by a local Ray
    # Ray runs its workers at nice 15; the engines are the server, and the single-process
    # server's engine runs at 0 (docs/engine-notes.md#ray-serve).
    os.environ.setdefault("RAY_worker_niceness", "0")
    if settings.ray_address is None:
        most = settings.max_replicas or settings.replicas or 1
        cpus = max(os.cpu_count() or 1, math.ceil(most * settings.replica_cpus))
        ray.init(num_cpus=cpus, resources={CONTROL_PLANE: 1}, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=True)
    else:
        ray.init(address=settings.ray_address, logging_level=logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": settings.port})
        opts = engine_options(settings)
        # A fixed replica count may be changed at run time (`loraswap scale N`) through
        # Serve's external-scaler call; Serve refuses that flag next to its autoscaler.
        serve.run(build_application(settings), name=APP_NAME, route_prefix="/",
                  blocking=False, external_scaler_enabled="autoscaling_config" not in opts)
        log.info("serving on http://%s:%d with %s engine replicas (Ray Serve)", host,
                 settings.port, settings.replicas)
        stop.wait()
        log.info("stopping: draining in-flight requests (up to %.0f s)",
                 settings.shutdown_timeout)
        serve.delete(APP_NAME)
        if settings.ray_address is None:  # ours: stop Serve too; a cluster's Serve is not
            serve.shutdown()
    finally:
        ray.shutdown()  # a local Ray stops; on a cluster this only disconnects
    return 0
