"""/admin/: the registry and the engine's adapter set, for operators (admin-scope keys).

Registration copies and hashes files: it runs in a worker thread so serving never waits.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from adapters import AdapterInUse, AdapterNotFound, AdapterRejected, AdapterTampered, RegistryError
from server.auth_deps import require_admin
from server.errors import APIError
from server.protocol import PinRequest, RegisterFromPath

__all__ = ["router"]

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])

_ARCHIVE_SUFFIXES = {"application/gzip": ".tar.gz", "application/x-gzip": ".tar.gz",
                     "application/zip": ".zip"}


def registry_error(exc: RegistryError) -> APIError:
    if isinstance(exc, AdapterNotFound):
        return APIError(404, str(exc), code="not_found")
    if isinstance(exc, AdapterRejected):
        return APIError(400, str(exc), code="adapter_rejected")
    if isinstance(exc, AdapterTampered):
        return APIError(409, str(exc), code="adapter_tampered")
    if isinstance(exc, AdapterInUse):
        return APIError(409, str(exc), code="adapter_in_use")
    return APIError(400, str(exc), code="registry_error")


async def _call(fn, *args, **kwargs):
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except RegistryError as exc:
        raise registry_error(exc) from None


def _show(request: Request, v) -> dict:
    return {**v.as_dict(), "engine": request.app.state.models.state(v.id)}


@router.get("/adapters")
async def list_adapters(request: Request, include_archived: bool = False) -> dict:
    versions = await _call(request.app.state.registry.list, include_archived=include_archived)
    return {"object": "list", "data": [_show(request, v) for v in versions]}


@router.post("/adapters", status_code=201)
async def register(body: RegisterFromPath, request: Request):
    reg = request.app.state.registry
    v = await _call(reg.add, Path(body.path).expanduser(), body.name,
                    description=body.description, tags=body.tags, metrics=body.metrics)
    if body.load:
        await request.app.state.models.ensure_loaded(v)
    return JSONResponse(_show(request, v), status_code=201)


@router.post("/adapters/upload", status_code=201)
async def upload(request: Request, name: str = Query(min_length=1, max_length=64),
                 description: str = "", load: bool = False):
    """The body is the archive itself (.tar.gz or .zip), e.g. `curl --data-binary @a.tar.gz`."""
    limit = request.app.state.settings.max_upload_mib * 1024 * 1024
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"upload too large: {declared} bytes, the limit is {limit} "
                       "(max_upload_mib)", code="upload_too_large")
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    suffix = _ARCHIVE_SUFFIXES.get(ctype, ".tar.gz")
    with tempfile.TemporaryDirectory(prefix="loraswap-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        size = 0
        with open(path, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise APIError(413, f"upload too large: over {limit} bytes (max_upload_mib)",
                                   code="upload_too_large")
                f.write(chunk)
        if size == 0:
            raise APIError(400, "empty upload: send the archive as the request body",
                           code="empty_upload")
        if suffix == ".tar.gz" and path.read_bytes()[:2] == b"PK":
            path = path.rename(path.with_name("upload.zip"))
        v = await _call(request.app.state.registry.add, path, name, description=description)
    if load:
        await request.app.state.models.ensure_loaded(v)
    return JSONResponse(_show(request, v), status_code=201)


@router.get("/adapters/{ref}")
async def show(ref: str, request: Request) -> dict:
    return _show(request, await _call(request.app.state.registry.get, ref))


@router.post("/adapters/{ref}/archive")
async def archive(ref: str, request: Request) -> dict:
    v = await _call(request.app.state.registry.archive, ref)
    await request.app.state.models.retire(v.id)
    return _show(request, v)


@router.delete("/adapters/{ref}")
async def delete(ref: str, request: Request) -> Response:
    reg = request.app.state.registry
    v = await _call(reg.get, ref)
    await _call(reg.delete, v.ref)
    await request.app.state.models.retire(v.id)
    return Response(status_code=204)


@router.post("/adapters/{ref}/load")
async def load(ref: str, request: Request) -> dict:
    v = await _call(request.app.state.registry.get, ref)
    if v.status != "active":
        raise APIError(409, f"{v.ref} is {v.status}; only active versions are served",
                       code="adapter_not_active")
    await request.app.state.models.ensure_loaded(v)
    return _show(request, v)


@router.post("/adapters/{ref}/unload")
async def unload(ref: str, request: Request) -> dict:
    v = await _call(request.app.state.registry.get, ref)
    await request.app.state.models.unload(v)
    return _show(request, v)


@router.post("/adapters/{ref}/pin")
async def pin(ref: str, request: Request, body: PinRequest | None = None) -> dict:
    v = await _call(request.app.state.registry.get, ref)
    if v.status != "active":
        raise APIError(409, f"{v.ref} is {v.status}; only active versions are served",
                       code="adapter_not_active")
    await request.app.state.models.pin(v, True if body is None else body.pinned)
    return _show(request, v)


@router.get("/engine")
async def engine_state(request: Request) -> dict:
    app = request.app
    engine = app.state.engine
    return {"base_model": app.state.models.base_id, "cpu": engine.is_cpu,
            "cpu_base_guard": engine.guard_active, "cpu_lora_kernels": engine.lora_kernels,
            "adapter_capacity": app.state.models.capacity,
            "loaded": [v.ref for v in app.state.models.loaded()],
            "engine_ids": sorted(await engine.loaded_ids())}
