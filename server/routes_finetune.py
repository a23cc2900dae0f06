"""`/v1/files` and `/v1/fine_tuning/jobs`: thin routes over server/serving_finetune.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from finetune import Caller, TooLarge
from server.auth_deps import require_fine_tune
from server.errors import NotFound
from server.protocol_finetune import (
    CheckpointList,
    EventList,
    FileDeleted,
    FileList,
    FileView,
    JobCreate,
    JobList,
    JobView,
)
from server.serving_finetune import FineTuning, file_view

__all__ = ["api"]

api = APIRouter(prefix="/v1", dependencies=[Depends(require_fine_tune)])


def _service(request: Request) -> FineTuning:
    service = getattr(request.app.state, "fine_tuning", None)
    if service is None:
        raise NotFound("fine-tuning is not enabled on this server")
    return service


def _caller(request: Request) -> Caller:
    return Caller(getattr(request.state, "api_key_id", None),
                  bool(getattr(request.state, "is_admin", False)))


@api.post("/files", response_model=FileView)
async def upload(request: Request, file: Annotated[UploadFile, File()],
                 purpose: Annotated[str, Form()]) -> FileView:
    service = _service(request)
    declared = int(request.headers.get("content-length") or 0)
    if declared > service.files.max_bytes + 1024 * 1024:  # the form's own bytes aside
        raise TooLarge(f"upload of {declared} bytes is over the "
                       f"{service.files.max_bytes // 2**20} MiB limit (max_file_mib)",
                       param="file", code="file_too_large")
    return await service.upload(_caller(request), purpose, file.filename or "", file.file.read)


@api.get("/files", response_model=FileList)
async def list_files(request: Request, purpose: str | None = None, after: str | None = None,
                     limit: int = Query(default=10000, ge=1, le=10000),
                     order: str = Query(default="desc", pattern="^(asc|desc)$")) -> FileList:
    found = await _service(request).list_files(_caller(request), purpose=purpose, after=after,
                                               limit=limit + 1, order=order)
    page = found[:limit]
    return FileList(data=page, has_more=len(found) > limit,
                    first_id=page[0].id if page else None, last_id=page[-1].id if page else None)


@api.get("/files/{file_id}", response_model=FileView)
async def retrieve_file(request: Request, file_id: str) -> FileView:
    return file_view(await _service(request).file(_caller(request), file_id))


@api.get("/files/{file_id}/content")
async def file_content(request: Request, file_id: str) -> FileResponse:
    service = _service(request)
    record = await service.file(_caller(request), file_id)
    return FileResponse(service.files.path(record), filename=record.filename,
                        media_type="application/octet-stream")


@api.delete("/files/{file_id}", response_model=FileDeleted)
async def delete_file(request: Request, file_id: str) -> FileDeleted:
    return FileDeleted(id=await _service(request).delete_file(_caller(request), file_id),
                       deleted=True)


@api.post("/fine_tuning/jobs", response_model=JobView)
async def create_job(request: Request, body: JobCreate) -> JobView:
    return await _service(request).create_job(_caller(request), body)


@api.get("/fine_tuning/jobs", response_model=JobList)
async def list_jobs(request: Request, after: str | None = None,
                    limit: int = Query(default=20, ge=1, le=100)) -> JobList:
    data, more = await _service(request).list_jobs(_caller(request), after=after, limit=limit)
    return JobList(data=data, has_more=more)


@api.get("/fine_tuning/jobs/{job_id}", response_model=JobView)
async def retrieve_job(request: Request, job_id: str) -> JobView:
    return await _service(request).job(_caller(request), job_id)


@api.post("/fine_tuning/jobs/{job_id}/cancel", response_model=JobView)
async def cancel_job(request: Request, job_id: str) -> JobView:
    return await _service(request).cancel(_caller(request), job_id)


@api.get("/fine_tuning/jobs/{job_id}/events", response_model=EventList)
async def list_events(request: Request, job_id: str, after: str | None = None,
                      limit: int = Query(default=20, ge=1, le=1000)) -> EventList:
    data, more = await _service(request).events(_caller(request), job_id, after=after,
                                                limit=limit)
    return EventList(data=data, has_more=more)


@api.get("/fine_tuning/jobs/{job_id}/checkpoints", response_model=CheckpointList)
async def list_checkpoints(request: Request, job_id: str, after: str | None = None,
                           limit: int = Query(default=10, ge=1, le=100)) -> CheckpointList:
    data, more = await _service(request).checkpoints(_caller(request), job_id, after=after,
                                                     limit=limit)
    return CheckpointList(data=data, has_more=more, first_id=data[0].id if data else None,
                          last_id=data[-1].id if data else None)
