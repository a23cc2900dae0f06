"""`POST /v1/feedback`: thumbs, scores, labels, corrections and preferences on a request id.

Depends only on FastAPI and `router`. The Router comes from `app.state.router`; who is
calling comes from `request.state.api_key_id` / `request.state.is_admin`, which the
server's authentication sets (absent = API keys off). Override `get_caller` or
`get_router` with `app.dependency_overrides` to wire them differently.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from router import Caller, FeedbackIn, Router, RouterError

__all__ = ["api", "get_caller", "get_router"]

api = APIRouter(tags=["feedback"])


def get_router(request: Request) -> Router:
    return request.app.state.router


def get_caller(request: Request) -> Caller:
    return Caller(
        api_key_id=getattr(request.state, "api_key_id", None),
        is_admin=bool(getattr(request.state, "is_admin", False)),
    )


RouterDep = Annotated[Router, Depends(get_router)]
CallerDep = Annotated[Caller, Depends(get_caller)]


@api.post("/v1/feedback", status_code=201)
def post_feedback(
    body: FeedbackIn,
    router: RouterDep,
    caller: CallerDep,
) -> Any:
    """201 with the new record; 200 with the stored record when the client_id was seen."""
    try:
        record, created = router.record_feedback(body, caller)
    except RouterError as exc:
        return JSONResponse(exc.to_body(), status_code=exc.status)
    return JSONResponse({"object": "feedback", **record.as_dict()},
                        status_code=201 if created else 200)
