"""Router test fixtures: a duck-typed registry stand-in, a Router on a temp database, and a
real uvicorn server on loopback running a small app with the router's routes mounted plus
a stand-in chat endpoint that routes and logs exactly as the server does."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from router import RequestRecord, Router, new_request_id
from server import routes_experiments, routes_feedback


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


def make_app(router: Router) -> FastAPI:
    app = FastAPI()
    app.state.router = router
    app.include_router(routes_experiments.api)
    app.include_router(routes_feedback.api)

    @app.middleware("http")
    async def keys(request: Request, call_next):  # what the server's auth will set
        key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if key:
            request.state.api_key_id = key
            request.state.is_admin = key.startswith("admin")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        return JSONResponse(
            {"error": {"message": f"{'.'.join(map(str, first['loc']))}: {first['msg']}",
                       "type": "invalid_request_error", "param": None, "code": "invalid"}},
            status_code=400)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        started = time.perf_counter()
        body = await request.json()
        unit = body.get("user") or request.headers.get("x-user-id")
        route = router.route(body["model"], unit)
        served = route.target if route else body["model"]
        request_id = new_request_id()
        text = body["messages"][-1]["content"]
        output = f"{served} says {text}"
        router.log_request(RequestRecord(
            request_id=request_id, model=body["model"], served=served, route=route, user=unit,
            api_key_id=getattr(request.state, "api_key_id", None),
            latency_ms=(time.perf_counter() - started) * 1000, prompt_tokens=len(text),
            completion_tokens=len(output), finish_reason="stop", prompt=body["messages"],
            output=output))
        headers = {"X-Request-Id": request_id, **(route.headers() if route else {})}
        return JSONResponse(
            {"id": request_id, "object": "chat.completion", "model": served,
             "choices": [{"index": 0, "finish_reason": "stop",
                          "message": {"role": "assistant", "content": output}}]},
            headers=headers)

    return app


@dataclass
class LiveServer:
    url: str
    router: Router


@pytest.fixture
def live_server(router: Router) -> Iterator[LiveServer]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(make_app(router), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield LiveServer(f"http://127.0.0.1:{port}", router)
    server.should_exit = True
    thread.join(timeout=10)
