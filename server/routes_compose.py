"""`POST /admin/adapters/merge` and `GET /admin/adapters/{ref}/export`: composing adapters
over HTTP. The work (peft, in training/) is handed in by the composition root as
`app.state.composer` (`merge(name, MergeRequest) -> version`, `export(ref, dtype, dir)`)."""

from __future__ import annotations

import asyncio
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import Field
from starlette.background import BackgroundTask

from server.auth_deps import require_admin
from server.errors import NotFound
from server.protocol import AdapterView, AdminModel
from server.routes_admin import _view

__all__ = ["MergeParent", "MergeRequest", "api"]

api = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])


class MergeParent(AdminModel):
    ref: str = Field(min_length=1, max_length=128)
    weight: float = Field(allow_inf_nan=True)


class MergeRequest(AdminModel):
    name: str = Field(min_length=1, max_length=64)
    parents: list[MergeParent] = Field(min_length=1, max_length=16)
    method: Literal["linear", "cat", "ties", "dare_linear", "dare_ties", "svd"] = "linear"
    density: float | None = None
    majority_sign_method: Literal["total", "frequency"] = "total"
    svd_rank: int | None = Field(default=None, ge=1, le=512)
    seed: int = Field(default=0, ge=0)
    evaluate: int = Field(default=0, ge=0, le=2000, description="held-out prompts per "
                          "parent task-world task to score the merge on")
    description: str = Field(default="", max_length=2000)


def _composer(request: Request) -> Any:
    composer = getattr(request.app.state, "composer", None)
    if composer is None:
        raise NotFound("adapter composition is not enabled on this server")
    return composer


@api.post("/adapters/merge", status_code=201, response_model=AdapterView)
async def merge(body: MergeRequest, request: Request) -> AdapterView:
    version = await asyncio.to_thread(_composer(request).merge, body)
    request.app.state.catalog.refresh()
    return _view(request, version, lineage=True)


@api.get("/adapters/{ref}/export")
async def export(request: Request, ref: str,
                 dtype: Literal["float32", "bfloat16", "float16"] = Query("float32")
                 ) -> FileResponse:
    """The adapter merged into the base, as a .tar.gz of the model directory (streamed)."""
    composer = _composer(request)
    work = Path(tempfile.mkdtemp(prefix="loraswap-export-"))
    try:
        name = await asyncio.to_thread(composer.export, ref, dtype, work / "model")
        archive = work / f"{name}.tar.gz"
        await asyncio.to_thread(_pack, work / "model", archive, name)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return FileResponse(archive, media_type="application/gzip", filename=archive.name,
                        background=BackgroundTask(shutil.rmtree, work, ignore_errors=True))


def _pack(folder: Path, archive: Path, name: str) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=name)
