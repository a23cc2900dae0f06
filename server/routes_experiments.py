"""Admin API for experiments: `/admin/experiments` CRUD, life cycle, weights, results.

Depends only on FastAPI and `router`. The app provides the Router object as
`app.state.router` (or overrides `get_router`); admin authentication is added where the
router is mounted: `app.include_router(api, dependencies=[Depends(require_admin)])`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from router import ExperimentCreate, Router, RouterError, WeightsUpdate
from router.results_page import render_results_page

__all__ = ["api", "get_router"]

api = APIRouter(prefix="/admin/experiments", tags=["experiments"])


def get_router(request: Request) -> Router:
    return request.app.state.router


RouterDep = Annotated[Router, Depends(get_router)]


def _answer(call: Callable[[], Any], status: int = 200) -> Any:
    try:
        result = call()
    except RouterError as exc:
        return JSONResponse(exc.to_body(), status_code=exc.status)
    if hasattr(result, "as_dict"):
        result = {"object": "experiment", **result.as_dict()}
    return JSONResponse(result, status_code=status)


@api.get("")
def list_experiments(router: RouterDep) -> Any:
    data = [{"object": "experiment", **e.as_dict()} for e in router.list()]
    return {"object": "list", "data": data}


@api.post("", status_code=201)
def create_experiment(body: ExperimentCreate, router: RouterDep) -> Any:
    options = body.model_dump(exclude={"alias", "variants"}, exclude_none=True)
    return _answer(lambda: router.create(
        alias=body.alias, variants=[(v.ref, v.weight) for v in body.variants], **options), 201)


@api.get("/{name}")
def get_experiment(name: str, router: RouterDep) -> Any:
    return _answer(lambda: router.get(name))


@api.delete("/{name}")
def delete_experiment(name: str, router: RouterDep) -> Any:
    def call() -> dict:
        router.delete(name)
        return {"object": "experiment.deleted", "name": name, "deleted": True}

    return _answer(call)


@api.post("/{name}/start")
def start_experiment(name: str, router: RouterDep) -> Any:
    return _answer(lambda: router.start(name))


@api.post("/{name}/pause")
def pause_experiment(name: str, router: RouterDep) -> Any:
    return _answer(lambda: router.pause(name))


@api.post("/{name}/stop")
def stop_experiment(name: str, router: RouterDep) -> Any:
    return _answer(lambda: router.stop(name))


@api.put("/{name}/weights")
def set_weights(name: str, body: WeightsUpdate, router: RouterDep) -> Any:
    return _answer(lambda: router.set_weights(name, [(v.ref, v.weight) for v in body.variants]))


@api.get("/{name}/results")
def results(name: str, router: RouterDep) -> Any:
    return _answer(lambda: router.results(name))


@api.get("/{name}/results.html", response_class=HTMLResponse)
def results_page(name: str, router: RouterDep) -> Any:
    try:
        data = router.results(name)
    except RouterError as exc:
        return JSONResponse(exc.to_body(), status_code=exc.status)
    return HTMLResponse(render_results_page(data))
