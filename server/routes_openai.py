"""The OpenAI-compatible routes: thin, the serving classes do the work."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from server.auth_deps import require_inference
from server.protocol import ChatCompletionRequest, CompletionRequest, ModelList
from server.serving_base import RequestMeta

__all__ = ["router"]

router = APIRouter(prefix="/v1", dependencies=[Depends(require_inference)])


@router.get("/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    return request.app.state.models.list_models()


def _meta(request: Request) -> RequestMeta:
    return RequestMeta(request.state.request_id, request.headers.get("x-user-id") or None,
                       getattr(request.state, "api_key_id", None))


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    return await request.app.state.chat.create(body, _meta(request))


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request):
    return await request.app.state.completions.create(body, _meta(request))
