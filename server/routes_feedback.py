"""`POST /v1/feedback`: thumbs, scores, labels, corrections and preferences on a request id.

Who is calling comes from `request.state.api_key_id` / `request.state.is_admin`, which the
server's authentication sets (absent = API keys off): a key may judge only its own requests.
Router errors propagate to the one error table (server/errors.py).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from router import Caller, FeedbackIn
from router.protocol import FeedbackView

__all__ = ["api"]

api = APIRouter(tags=["feedback"])


@api.post(
    "/v1/feedback", status_code=201, response_model=FeedbackView,
    responses={200: {"model": FeedbackView,
                     "description": "a retry: the record stored under this client_id"}},
)
async def post_feedback(body: FeedbackIn, request: Request) -> JSONResponse:
    """201 with the new record; 200 with the stored record when the client_id was seen."""
    caller = Caller(api_key_id=getattr(request.state, "api_key_id", None),
                    is_admin=bool(getattr(request.state, "is_admin", False)))
    record, created = await asyncio.to_thread(request.app.state.router.record_feedback,
                                              body, caller)
    view = FeedbackView.model_validate({"object": "feedback", **record.as_dict()})
    return JSONResponse(view.model_dump(mode="json"), status_code=201 if created else 200)
