"""The FastAPI app around one engine, and the run loop with a graceful drain.

`create_app` takes its parts (engine, registry, router, keys) ready-made: the serve command
builds the real ones (loraswap/wiring.py), fast tests pass a fake engine. Nothing starts
until the lifespan runs: it starts the engine, builds the in-memory catalog, experiment
table and key cache, then serves; `run` is what `loraswap serve` calls (vLLM spawns its
engine core, so the caller must be a `__main__` module or a console script).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import uuid
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from adapters import Registry
from router import Router
from server import (
    routes_aliases,
    routes_compose,
    routes_experiments,
    routes_feedback,
    routes_finetune,
)
from server.auth import KeyStore
from server.auth_deps import require_experiment_access, require_inference
from server.catalog import ModelCatalog
from server.config import ServerConfig
from server.engine import EngineUnavailable
from server.errors import NotReady, PayloadTooLarge, install_error_handlers, to_response
from server.metrics import Metrics
from server.mixtures import Mixtures
from server.openai_requests import LIMITS
from server.reconcile import Reconciler
from server.residency import Residency
from server.routes_admin import router as admin_router
from server.routes_openai import router as openai_router
from server.serving_chat import ServingChat
from server.serving_completions import ServingCompletions
from server.serving_models import ServingModels

__all__ = ["create_app", "is_loopback", "new_request_id", "run"]

log = logging.getLogger("loraswap.server")


def new_request_id() -> str:
    """Always the server's own, never a client's: feedback trusts these ids, so they must be
    unique and unguessable."""
    return "req_" + uuid.uuid4().hex


class RequestIdMiddleware:
    """Every response gets a server-made X-Request-Id, and is counted."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = new_request_id()
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
                route = scope.get("route")
                path = getattr(route, "path", "unmatched")
                self.metrics.requests.labels(path, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimitMiddleware:
    """Bodies over `limit` bytes get a 413 before they are parsed (uploads have their own
    limit). Counts what arrives, so a body without Content-Length is bounded too."""

    def __init__(self, app, limit: int, exempt: tuple[str, ...]) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await to_response(self._too_large())(scope, receive, send)
            return
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise self._too_large()
            return message

        await self.app(scope, counted, send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body over {self.limit} bytes", code="request_too_large")


def _load_tokenizer(config: ServerConfig):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(config.base_model_dir))


def create_app(config: ServerConfig, *, engine, registry: Registry, router: Router,
               keys: KeyStore, tokenizer=None, metrics: Metrics | None = None,
               residency_class=Residency, fine_tuning=None,
               make_mixture=None, composer=None) -> FastAPI:
    """The app over ready-made parts; `engine` is a `server.engine.Engine` or a stand-in with
    the same methods (`server.engine_remote.RemoteEngine` for engine replicas, with
    `residency_class` its ClusterResidency). The app owns the parts from here: its shutdown
    closes them."""
    metrics = metrics or Metrics()
    catalog = ModelCatalog(config.model_id, registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app.state
        state.ready = False
        await engine.start()
        capacity = engine.config.max_cpu_loras - (1 if engine.guard_active else 0)
        residency = residency_class(engine, registry.check, capacity, metrics,
                                    config.adapter_wait_timeout)
        reconciler = Reconciler(registry, catalog, router, keys, residency,
                                leads=lambda: getattr(engine, "leads", True))
        await asyncio.to_thread(reconciler.refresh_tables)
        models = ServingModels(catalog, router)
        tok = tokenizer if tokenizer is not None else _load_tokenizer(config)
        state.residency, state.models = residency, models
        serving = (models, residency, engine, tok, metrics, config.max_model_len, config.max_n)
        mixtures = None if make_mixture is None else Mixtures(
            make_mixture, base_id=config.model_id, timeout=config.mixture_timeout,
            refresh=catalog.refresh)
        state.chat = ServingChat(*serving, request_log=router.log_request, mixtures=mixtures,
                                 tool_call_parser=config.tool_call_parser)
        state.completions = ServingCompletions(*serving, request_log=router.log_request,
                                               mixtures=mixtures)
        if config.eager_load:
            await _load_all(residency, catalog)
        reconcile = asyncio.create_task(reconciler.run(config.reconcile_interval))
        watchdog = asyncio.create_task(_watch_engine(app, engine, config.engine_dead_exit_delay))
        log.info("engine ready in %.1f s: base %s (%s), %s, max_loras=%d (%s)%s, adapter cache %d",
                 engine.start_seconds or 0, config.model_id, config.base_model_dir,
                 "CPU" if engine.is_cpu else "GPU", engine.max_loras, engine.slots_reason,
                 " (the base guard adapter holds one while base requests run)"
                 if engine.guard_active else "", capacity)
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            reconciler.stopped = True
            reconcile.cancel()
            watchdog.cancel()
            router.close()  # flushes the request log first
            engine.shutdown()
            registry.close()
            keys.close()
            if fine_tuning is not None:
                fine_tuning.close()
            log.info("engine stopped")

    app = FastAPI(title="loraswap", version="0.1.0", lifespan=lifespan)
    state = app.state
    state.config, state.metrics, state.keys = config, metrics, keys
    state.engine, state.registry, state.router, state.catalog = engine, registry, router, catalog
    state.fine_tuning = fine_tuning  # server/serving_finetune.py; None: those routes 404
    state.composer = composer  # server/routes_compose.py; None: those routes 404
    if fine_tuning is not None:
        fine_tuning.bind_models(lambda name: name in router.aliases(),
                                lambda: (catalog.refresh(), router.refresh()))
    state.ready = False
    state.engine_dead = False
    state.exit_code = 0
    state.request_exit = lambda: None  # run() points this at uvicorn's shutdown
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, limit=LIMITS["request_bytes"],
                       exempt=("/admin/adapters/upload", "/v1/files"))
    app.add_middleware(RequestIdMiddleware, metrics=metrics)
    app.include_router(openai_router)
    app.include_router(admin_router)
    app.include_router(routes_experiments.api, dependencies=[Depends(require_experiment_access)])
    app.include_router(routes_aliases.api, dependencies=[Depends(require_experiment_access)])
    app.include_router(routes_feedback.api, dependencies=[Depends(require_inference)])
    app.include_router(routes_finetune.api)
    app.include_router(routes_compose.api)

    @app.get("/health")
    async def health(request: Request):
        if request.app.state.engine_dead:
            return to_response(EngineUnavailable("the engine process died; exiting"))
        return JSONResponse({"status": "ok"})

    @app.get("/ready")
    async def ready(request: Request):
        if request.app.state.engine_dead:
            return to_response(EngineUnavailable("the engine process died; exiting"))
        if not request.app.state.ready or not engine.running:
            return to_response(NotReady("the engine is not ready"))
        return JSONResponse({"status": "ready", "model": config.model_id})

    @app.get("/metrics")
    async def prometheus() -> Response:
        replicas = getattr(engine, "replicas", None)
        if replicas is not None:
            metrics.show_replicas(replicas)
            metrics.show_ingresses(getattr(engine, "ingresses", []))
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


ENGINE_DEAD_EXIT = 75  # EX_TEMPFAIL: try again (uvicorn itself exits 3 on a failed start)


async def _watch_engine(app: FastAPI, engine, exit_delay: float, every: float = 0.5) -> None:
    """The engine core is another process and can die under us (out of memory, a kernel
    crash). Then every request fails, so the process should not look healthy: /health and
    /ready answer 503 at once, requests get a retryable 503, and after `exit_delay` seconds
    the server exits with status 75 so a supervisor (systemd, Kubernetes, Docker) restarts
    it. We do not restart the engine in-process: a fresh process is the one state we know."""
    while engine.running or not app.state.ready:
        await asyncio.sleep(every)
    app.state.engine_dead = True
    app.state.exit_code = ENGINE_DEAD_EXIT
    log.error("the engine process died: answering 503 for %.1f s, then exiting with status %d",
              exit_delay, ENGINE_DEAD_EXIT)
    await asyncio.sleep(exit_delay)
    app.state.request_exit()


async def _load_all(residency: Residency, catalog: ModelCatalog) -> None:
    for v in catalog.active()[: residency.capacity]:
        try:
            await residency.ensure_loaded(v)
        except Exception as exc:  # one bad version must not stop the server starting
            log.warning("not loading %s: %s", v.ref, exc)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(app: FastAPI, config: ServerConfig) -> int:
    """Serve until SIGTERM/SIGINT; in-flight requests get `shutdown_timeout` s; exit code 0."""
    import uvicorn

    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = config.host
    keys_configured = app.state.keys.any_active()
    if not keys_configured and not is_loopback(host):
        log.warning("no API keys configured: binding to 127.0.0.1 instead of %s "
                    "(create one with `loraswap keys create`)", host)
        host = "127.0.0.1"
    elif not keys_configured:
        log.info("no API keys configured: serving without authentication on loopback %s", host)
    if config.settings_summary:
        log.info("settings:\n%s", config.settings_summary)

    class Server(uvicorn.Server):
        # uvicorn re-raises the caught signal after a graceful shutdown (exit code 143);
        # a clean drain should exit 0.
        def handle_exit(self, sig: int, frame) -> None:
            if not self.should_exit:
                log.info("%s: draining in-flight requests (up to %.0f s)",
                         signal.Signals(sig).name, config.shutdown_timeout)
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    uv_config = uvicorn.Config(app, host=host, port=config.port, log_level=config.log_level,
                               access_log=False,
                               timeout_graceful_shutdown=int(config.shutdown_timeout),
                               lifespan="on")
    server = Server(uv_config)
    app.state.request_exit = lambda: setattr(server, "should_exit", True)
    server.run()
    for handler in logging.getLogger().handlers:
        handler.flush()
    if app.state.exit_code:
        return app.state.exit_code
    return 0 if server.started else 1
