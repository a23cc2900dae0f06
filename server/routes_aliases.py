"""Admin API for aliases: `/admin/aliases` pointers, routing rules, rollback and history.

Mounted with the experiment routes' access rule: analyst keys read, admin keys write. Every
write records the calling key's id in the alias history.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from router import Alias, Router
from router.alias_protocol import AliasHistory, AliasList, AliasRulesSet, AliasSet, AliasView

__all__ = ["api", "key_id"]

api = APIRouter(prefix="/admin/aliases", tags=["aliases"])


def key_id(request: Request) -> str | None:
    return getattr(request.state, "api_key_id", None)


def _views(router: Router, aliases: list[Alias]) -> list[AliasView]:
    """With each alias's active experiment (one read for all of them)."""
    active = {e.alias: e.name for e in router.list(("running", "paused"))}
    return [AliasView.model_validate({**a.as_dict(), "experiment": active.get(a.name)})
            for a in aliases]


async def _alias(request: Request, fn: Callable[[Router], Alias]) -> JSONResponse:
    def work() -> AliasView:
        router = request.app.state.router
        return _views(router, [fn(router)])[0]

    view = await asyncio.to_thread(work)
    return JSONResponse(view.model_dump(mode="json"))


@api.get("", response_model=AliasList)
async def list_aliases(request: Request) -> JSONResponse:
    def work() -> AliasList:
        router = request.app.state.router
        return AliasList(data=_views(router, router.list_aliases()))

    return JSONResponse((await asyncio.to_thread(work)).model_dump(mode="json"))


@api.get("/{name}", response_model=AliasView)
async def get_alias(name: str, request: Request) -> JSONResponse:
    return await _alias(request, lambda r: r.get_alias(name))


@api.put("/{name}", response_model=AliasView)
async def set_alias(name: str, body: AliasSet, request: Request) -> JSONResponse:
    return await _alias(request, lambda r: r.set_alias(
        name, body.target, body.system_prompt, key_id=key_id(request), reason=body.reason))


@api.put("/{name}/rules", response_model=AliasView)
async def set_rules(name: str, body: AliasRulesSet, request: Request) -> JSONResponse:
    return await _alias(request, lambda r: r.set_rules(
        name, body.rules, key_id=key_id(request), reason=body.reason))


@api.post("/{name}/rollback", response_model=AliasView)
async def rollback(name: str, request: Request) -> JSONResponse:
    return await _alias(request, lambda r: r.rollback_alias(name, key_id=key_id(request)))


@api.delete("/{name}")
async def delete_alias(name: str, request: Request) -> JSONResponse:
    await asyncio.to_thread(request.app.state.router.delete_alias, name, key_id=key_id(request))
    return JSONResponse({"object": "alias.deleted", "name": name, "deleted": True})


@api.get("/{name}/history", response_model=AliasHistory)
async def history(name: str, request: Request) -> JSONResponse:
    rows = await asyncio.to_thread(request.app.state.router.alias_history, name)
    body = AliasHistory(alias=name, data=rows)
    return JSONResponse(body.model_dump(mode="json", by_alias=True))
