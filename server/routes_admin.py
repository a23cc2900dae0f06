"""/admin/: the registry and the engine's adapter set, for operators (admin-scope keys).

Registration copies and hashes files: it runs in a worker thread so serving never waits.
Every write here also updates the in-memory catalog at once, so a version registered
through this API is servable by the next request. Errors are raised, never caught: the one
table in server/errors.py answers for them.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from adapters import AdapterVersion
from server.auth_deps import require_admin
from server.errors import Conflict, InvalidRequest, PayloadTooLarge
from server.protocol import (
    AdapterList,
    AdapterView,
    EngineView,
    IngressView,
    PinRequest,
    RegisterFromPath,
    ReplicaView,
    ResidencyView,
    ScaleRequest,
    ScaleView,
)

__all__ = ["router"]

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])

_ARCHIVE_SUFFIXES = {"application/gzip": ".tar.gz", "application/x-gzip": ".tar.gz",
                     "application/zip": ".zip"}


def _view(request: Request, v: AdapterVersion, *, lineage: bool = False) -> AdapterView:
    state = request.app.state
    try:
        path = str(v.path.relative_to(state.registry.store_dir))
    except ValueError:
        path = v.path.name
    return AdapterView(
        id=v.id, ref=v.ref, name=v.name, version=v.version, status=v.status, path=path,
        rank=v.rank, alpha=v.alpha, target_modules=v.target_modules, size_bytes=v.size_bytes,
        files=v.files, base_name=v.base_name, base_fingerprint=v.base_fingerprint,
        base_match=v.base_match, source_kind=v.source_kind, description=v.description,
        tags=v.tags, metrics=v.metrics, parent=v.lineage.get("parent"),
        dataset_fingerprint=v.lineage.get("dataset_fingerprint"),
        lineage=v.lineage if lineage else None, created_at=v.created_at,
        archived_at=v.archived_at, engine=ResidencyView(**state.residency.view(v.id)))


def _active(v: AdapterVersion) -> AdapterVersion:
    if v.status != "active":
        raise Conflict(f"{v.ref} is {v.status}; only active versions are served",
                       code="adapter_not_active")
    return v


async def _registered(request: Request, v: AdapterVersion, load: bool) -> Response:
    request.app.state.catalog.put(v)
    if load:
        await request.app.state.residency.ensure_loaded(v)
    return Response(_view(request, v, lineage=True).model_dump_json(), status_code=201,
                    media_type="application/json")


@router.get("/adapters", response_model=AdapterList)
async def list_adapters(request: Request, include_archived: bool = False) -> AdapterList:
    versions = await asyncio.to_thread(request.app.state.registry.list,
                                       include_archived=include_archived)
    return AdapterList(data=[_view(request, v) for v in versions])


@router.post("/adapters", status_code=201, response_model=AdapterView)
async def register(body: RegisterFromPath, request: Request) -> Response:
    v = await asyncio.to_thread(request.app.state.registry.add, Path(body.path).expanduser(),
                                body.name, description=body.description, tags=body.tags,
                                metrics=body.metrics)
    return await _registered(request, v, body.load)


@router.post("/adapters/upload", status_code=201, response_model=AdapterView)
async def upload(request: Request, name: str = Query(min_length=1, max_length=64),
                 description: str = "", load: bool = False) -> Response:
    """The body is the archive itself (.tar.gz or .zip), e.g. `curl --data-binary @a.tar.gz`."""
    limit = request.app.state.config.max_upload_mib * 1024 * 1024
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"upload too large: {declared} bytes, the limit is {limit} "
                              "(max_upload_mib)")
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    suffix = _ARCHIVE_SUFFIXES.get(ctype, ".tar.gz")
    with tempfile.TemporaryDirectory(prefix="loraswap-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        size = 0
        with open(path, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"upload too large: over {limit} bytes "
                                          "(max_upload_mib)")
                f.write(chunk)
        if size == 0:
            raise InvalidRequest("empty upload: send the archive as the request body",
                                 code="empty_upload")
        if suffix == ".tar.gz" and path.read_bytes()[:2] == b"PK":
            path = path.rename(path.with_name("upload.zip"))
        v = await asyncio.to_thread(request.app.state.registry.add, path, name,
                                    description=description)
    return await _registered(request, v, load)


@router.get("/adapters/{ref}", response_model=AdapterView)
async def show(ref: str, request: Request) -> AdapterView:
    v = await asyncio.to_thread(request.app.state.registry.get, ref)
    return _view(request, v, lineage=True)


@router.post("/adapters/{ref}/archive", response_model=AdapterView)
async def archive(ref: str, request: Request) -> AdapterView:
    state = request.app.state
    v = await asyncio.to_thread(state.registry.archive, ref)
    state.catalog.put(v)
    await state.residency.retire(v.id)
    return _view(request, v)


@router.delete("/adapters/{ref}", status_code=204)
async def delete(ref: str, request: Request) -> Response:
    state = request.app.state
    v = await asyncio.to_thread(state.registry.resolve, ref)
    await asyncio.to_thread(state.registry.delete, v.ref)
    state.catalog.drop(v)
    await state.residency.retire(v.id)
    return Response(status_code=204)


@router.post("/adapters/{ref}/load", response_model=AdapterView)
async def load(ref: str, request: Request) -> AdapterView:
    v = _active(await asyncio.to_thread(request.app.state.registry.get, ref))
    await request.app.state.residency.ensure_loaded(v)
    return _view(request, v)


@router.post("/adapters/{ref}/unload", response_model=AdapterView)
async def unload(ref: str, request: Request) -> AdapterView:
    v = await asyncio.to_thread(request.app.state.registry.resolve, ref)
    await request.app.state.residency.unload(v)
    return _view(request, v)


@router.post("/adapters/{ref}/pin", response_model=AdapterView)
async def pin(ref: str, request: Request, body: PinRequest | None = None) -> AdapterView:
    v = _active(await asyncio.to_thread(request.app.state.registry.get, ref))
    await request.app.state.residency.pin(v, True if body is None else body.pinned)
    return _view(request, v)


@router.get("/engine", response_model=EngineView)
async def engine_state(request: Request) -> EngineView:
    state = request.app.state
    engine = state.engine
    return EngineView(base_model=state.models.base_id, cpu=engine.is_cpu,
                      cpu_base_guard=engine.guard_active, cpu_lora_kernels=engine.lora_kernels,
                      max_loras=engine.max_loras, max_loras_reason=engine.slots_reason,
                      adapter_capacity=state.residency.capacity,
                      loaded=[v.ref for v in state.residency.resident()],
                      engine_ids=sorted(await engine.loaded_ids()),
                      running_requests=engine.unfinished(),
                      replicas=None if getattr(engine, "replicas", None) is None else [
                          ReplicaView.model_validate(r, from_attributes=False)
                          for r in await engine.refresh()],
                      ingresses=None if getattr(engine, "ingresses", None) is None else [
                          IngressView.model_validate(i, from_attributes=False)
                          for i in engine.ingresses])


@router.post("/engine/replicas", response_model=ScaleView, status_code=202)
async def scale(body: ScaleRequest, request: Request) -> ScaleView:
    """Scaled out with a fixed replica count: set it (`loraswap scale N`). New replicas
    join as they become ready; removed ones stop taking requests and finish theirs."""
    engine = request.app.state.engine
    if not hasattr(engine, "scale"):
        raise Conflict("this server runs one engine in one process; start it with "
                       "`loraswap serve --replicas N` to scale", code="not_supported")
    await engine.scale(body.replicas)
    return ScaleView(replicas=body.replicas, current=len(await engine.refresh()))
