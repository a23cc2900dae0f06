"""Admin API for experiments: `/admin/experiments` CRUD, life cycle, weights, results,
promotion and the training export.

Admin authentication is added where this router is mounted. Router calls touch SQLite, so
they run in a worker thread; router errors propagate to the one error table. Every body is
validated against its response model in router/protocol.py (also what `/openapi.json` shows),
so a change in what the router returns cannot leave the documented shape silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from common.jsonl import dumps_line
from router import Experiment, ExperimentCreate, Router, WeightsUpdate
from router.alias_protocol import PromoteIn
from router.protocol import (
    ExperimentDeleted,
    ExperimentList,
    ExperimentResults,
    ExperimentView,
)
from router.results_page import render_results_page
from server.routes_aliases import key_id

__all__ = ["api"]

api = APIRouter(prefix="/admin/experiments", tags=["experiments"])


def _view(exp: Experiment) -> ExperimentView:
    return ExperimentView.model_validate({"object": "experiment", **exp.as_dict()})


def _respond(body: BaseModel, status: int = 200) -> JSONResponse:
    """`exclude_unset`: keys the router leaves out (a lift's `z` before both sides have
    data, the series' `y_range` before any feedback) stay out instead of becoming nulls."""
    return JSONResponse(body.model_dump(mode="json", exclude_unset=True), status_code=status)


async def _experiment(
    request: Request, fn: Callable[[Router], Experiment], status: int = 200
) -> JSONResponse:
    exp = await asyncio.to_thread(fn, request.app.state.router)
    return _respond(_view(exp), status)


@api.get("", response_model=ExperimentList)
async def list_experiments(request: Request) -> JSONResponse:
    exps = await asyncio.to_thread(request.app.state.router.list)
    return _respond(ExperimentList(object="list", data=[_view(e) for e in exps]))


@api.post("", status_code=201, response_model=ExperimentView)
async def create_experiment(body: ExperimentCreate, request: Request) -> JSONResponse:
    options = body.model_dump(exclude={"alias", "variants"}, exclude_none=True)
    return await _experiment(request, lambda r: r.create(
        alias=body.alias, variants=[v.spec() for v in body.variants], **options), 201)


@api.get("/{name}", response_model=ExperimentView)
async def get_experiment(name: str, request: Request) -> JSONResponse:
    return await _experiment(request, lambda r: r.get(name))


@api.delete("/{name}", response_model=ExperimentDeleted)
async def delete_experiment(name: str, request: Request) -> JSONResponse:
    await asyncio.to_thread(request.app.state.router.delete, name)
    return _respond(ExperimentDeleted(object="experiment.deleted", name=name, deleted=True))


@api.post("/{name}/start", response_model=ExperimentView)
async def start_experiment(name: str, request: Request) -> JSONResponse:
    return await _experiment(request, lambda r: r.start(name, key_id=key_id(request)))


@api.post("/{name}/pause", response_model=ExperimentView)
async def pause_experiment(name: str, request: Request) -> JSONResponse:
    return await _experiment(request, lambda r: r.pause(name, key_id=key_id(request)))


@api.post("/{name}/stop", response_model=ExperimentView)
async def stop_experiment(name: str, request: Request) -> JSONResponse:
    return await _experiment(request, lambda r: r.stop(name, key_id=key_id(request)))


@api.post("/{name}/promote", response_model=ExperimentView)
async def promote(name: str, request: Request, body: PromoteIn | None = None) -> JSONResponse:
    """Stop the experiment and point its alias at the winner (or the variant named)."""
    body = body or PromoteIn()
    return await _experiment(request, lambda r: r.promote(
        name, body.variant, key_id=key_id(request), reason=body.reason))


@api.put("/{name}/weights", response_model=ExperimentView)
async def set_weights(name: str, body: WeightsUpdate, request: Request) -> JSONResponse:
    return await _experiment(request, lambda r: r.set_weights(
        name, [(v.ref, v.weight) for v in body.variants]))


@api.get("/{name}/results", response_model=ExperimentResults)
async def results(name: str, request: Request) -> JSONResponse:
    def compute() -> ExperimentResults:
        return ExperimentResults.model_validate(request.app.state.router.results(name))

    return _respond(await asyncio.to_thread(compute))


@api.get("/{name}/export", response_class=Response,
         responses={200: {"content": {"application/x-ndjson": {}}}})
async def export(name: str, request: Request,
                 format: str = Query("sft", pattern="^(sft|dpo|kto)$")) -> Response:  # noqa: A002
    """The experiment's feedback as training rows (JSON lines, TRL's conversational format),
    what `loraswap feedback export --experiment` writes; analysts may read it."""
    result = await asyncio.to_thread(request.app.state.router.export, format, experiment=name)
    headers = {"X-Loraswap-Export-Rows": str(len(result.rows)),
               "X-Loraswap-Export-Feedback": str(result.feedback)}
    if not result.rows:
        headers["X-Loraswap-Export-Empty"] = result.explain_empty()[:500]
    return Response("".join(dumps_line(r) for r in result.rows),
                    media_type="application/x-ndjson", headers=headers)


@api.get("/{name}/results.html", response_class=HTMLResponse)
async def results_page(name: str, request: Request) -> HTMLResponse:
    data = await asyncio.to_thread(request.app.state.router.results, name)
    return HTMLResponse(render_results_page(data))
