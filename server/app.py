"""The FastAPI app: one engine, one registry, the routes, and a graceful run loop.

`create_app` builds everything in the lifespan, so importing this module starts nothing;
`run` is what `loraswap serve` calls (vLLM spawns its engine core, so the caller must be a
`__main__` module or a console script).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import time
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from adapters import Registry
from loraswap.settings import Settings
from router import Router, new_request_id
from server import routes_experiments, routes_feedback
from server.auth import KeyStore
from server.auth_deps import require_admin, require_inference
from server.engine import Engine, EngineConfig
from server.errors import APIError, install_error_handlers
from server.metrics import Metrics
from server.routes_admin import router as admin_router
from server.routes_openai import router as openai_router
from server.serving_chat import ServingChat
from server.serving_completions import ServingCompletions
from server.serving_models import ModelManager, routed_resolver

__all__ = ["create_app", "is_loopback", "run"]

log = logging.getLogger("loraswap.server")


class RequestIdMiddleware:
    """Every response gets a server-made X-Request-Id, and is counted.

    A client's own X-Request-Id is not reused: request ids key the request log that feedback
    refers to, so they must be unique and unguessable.
    """

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


def _tokenizer(settings: Settings):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(settings.base_model_dir))


def create_app(settings: Settings) -> FastAPI:
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ready = False
        registry = Registry(settings.db_path, settings.store_dir, settings.base_model_dir,
                            max_rank=settings.max_lora_rank)
        engine = Engine(EngineConfig(
            model=settings.base_model_dir, max_loras=settings.max_loras,
            max_lora_rank=settings.max_lora_rank, max_cpu_loras=settings.max_cpu_loras,
            max_model_len=settings.max_model_len, max_num_seqs=settings.max_num_seqs,
            kv_cache_gib=settings.kv_cache_gib, cpu_base_guard=settings.cpu_base_guard,
            cpu_lora_kernels=settings.cpu_lora_kernels))
        app.state.engine = engine
        app.state.registry = registry
        await engine.start()
        capacity = settings.max_cpu_loras - (1 if engine.guard_active else 0)
        models = ModelManager(settings.model_id, str(settings.base_model_dir), registry, engine,
                              metrics, capacity)
        router = Router(settings.db_path, registry, base_id=settings.model_id,
                        retention=settings.retention, log_all=settings.log_all_requests)
        app.state.router = router
        models.aliases = router.aliases
        models.resolver = routed_resolver(models, router)
        tok = _tokenizer(settings)
        app.state.models = models
        app.state.chat = ServingChat(models, engine, tok, metrics, settings.max_model_len,
                                     settings.max_n, request_log=router.log_request)
        app.state.completions = ServingCompletions(models, engine, tok, metrics,
                                                   settings.max_model_len, settings.max_n,
                                                   request_log=router.log_request)
        if settings.eager_load:
            await models.load_all()
        reconcile = asyncio.create_task(models.run_reconcile(settings.reconcile_interval))
        log.info("engine ready in %.1f s: base %s (%s), %s, max_loras=%d%s, adapter cache %d",
                 engine.start_seconds or 0, settings.model_id, settings.base_model_dir,
                 "CPU" if engine.is_cpu else "GPU", settings.max_loras,
                 " (the base guard adapter holds one while base requests run)"
                 if engine.guard_active else "", capacity)
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            reconcile.cancel()
            router.close()  # flushes the request log first
            engine.shutdown()
            registry.close()
            log.info("engine stopped")

    app = FastAPI(title="loraswap", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.keys = KeyStore(settings.db_path)
    app.state.ready = False
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware, metrics=metrics)
    app.include_router(openai_router)
    app.include_router(admin_router)
    app.include_router(routes_experiments.api, dependencies=[Depends(require_admin)])
    app.include_router(routes_feedback.api, dependencies=[Depends(require_inference)])

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(request: Request):
        engine = getattr(request.app.state, "engine", None)
        if not request.app.state.ready or engine is None or not engine.running:
            return APIError(503, "the engine is not ready", code="not_ready").response()
        return JSONResponse({"status": "ready", "model": settings.model_id})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; in-flight requests get `shutdown_timeout` s; exit code 0."""
    import uvicorn

    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = settings.host
    keys_configured = KeyStore(settings.db_path).any_active()
    if not keys_configured and not is_loopback(host):
        log.warning("no API keys configured: binding to 127.0.0.1 instead of %s "
                    "(create one with `loraswap keys create`)", host)
        host = "127.0.0.1"
    elif not keys_configured:
        log.info("no API keys configured: serving without authentication on loopback %s", host)
    log.info("settings:\n%s", settings.describe())

    class Server(uvicorn.Server):
        # uvicorn re-raises the caught signal after a graceful shutdown (exit code 143);
        # a clean drain should exit 0.
        def handle_exit(self, sig: int, frame) -> None:
            if not self.should_exit:
                log.info("%s: draining in-flight requests (up to %.0f s)",
                         signal.Signals(sig).name, settings.shutdown_timeout)
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    config = uvicorn.Config(create_app(settings), host=host, port=settings.port,
                            log_level=settings.log_level, access_log=False,
                            timeout_graceful_shutdown=int(settings.shutdown_timeout),
                            lifespan="on")
    started = time.monotonic()
    server = Server(config)
    server.run()
    for handler in logging.getLogger().handlers:
        handler.flush()
    if not server.started and time.monotonic() - started > 0:
        return 1
    return 0
