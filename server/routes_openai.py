"""The OpenAI-compatible routes: thin, the serving classes do the work."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from server import protocol as wire
from server.auth_deps import require_inference
from server.serving_base import RequestMeta

__all__ = ["router"]

router = APIRouter(prefix="/v1", dependencies=[Depends(require_inference)])

_SSE = {200: {"content": {"text/event-stream": {"description": "with stream=true: chunks of "
                                                               "the same shape, then [DONE]"}}}}


@router.get("/models", response_model=wire.ModelList)
async def list_models(request: Request) -> wire.ModelList:
    return request.app.state.models.list_models()


@router.get("/models/{model_id:path}", response_model=wire.ModelCard)
async def retrieve_model(model_id: str, request: Request) -> wire.ModelCard:
    return request.app.state.models.card(model_id)


def _meta(request: Request) -> RequestMeta:
    return RequestMeta(request.state.request_id, request.headers.get("x-user-id") or None,
                       getattr(request.state, "api_key_id", None), request.is_disconnected,
                       request.headers)


@router.post("/chat/completions", response_model=wire.ChatCompletionResponse, responses=_SSE)
async def chat_completions(body: wire.ChatCompletionRequest, request: Request):
    return await request.app.state.chat.create(body, _meta(request))


@router.post("/completions", response_model=wire.CompletionResponse, responses=_SSE)
async def completions(body: wire.CompletionRequest, request: Request):
    return await request.app.state.completions.create(body, _meta(request))
