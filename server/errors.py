"""The one error taxonomy: every exception a request can raise, mapped to an OpenAI-shaped body.

Why one table: the registry, the router and the server each raise their own exceptions, and
before this table they were translated in four places that disagreed (a 409 had two types,
bad feedback was a 422 while every other bad value was a 400). Now routes raise and never
catch; `install_error_handlers` looks the class up here (walking the MRO, so a subclass
inherits its parent's row unless it has its own).

Rules the table keeps: 400 invalid values (FastAPI's 422s included), 401 missing or bad key,
403 wrong scope or not your request, 404 anything unknown, 409 conflicts (one type:
`conflict_error`), 413 too large, 503 not ready or no adapter slot, 500 only for our own bugs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import adapters
import finetune
import router
from server.engine import AdapterLoadError, EngineInputError, EngineUnavailable

__all__ = [
    "ERRORS",
    "AdapterCapacityError",
    "ClientDisconnected",
    "Conflict",
    "ErrorSpec",
    "InvalidRequest",
    "ModelNotFound",
    "NotFound",
    "NotReady",
    "PayloadTooLarge",
    "PermissionDenied",
    "ServerError",
    "Unauthorized",
    "error_body",
    "install_error_handlers",
    "spec_of",
    "to_response",
]

log = logging.getLogger("loraswap.server")


class ServerError(Exception):
    """An error the server raises itself; `code` and `param` override the table's per instance."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(ServerError):
    pass


class Unauthorized(ServerError):
    pass


class PermissionDenied(ServerError):
    pass


class NotFound(ServerError):
    pass


class ModelNotFound(NotFound):
    def __init__(self, model: str, why: str | None = None) -> None:
        msg = f"The model `{model}` does not exist or you do not have access to it."
        super().__init__(f"{msg} ({why})" if why else msg, param="model")


class Conflict(ServerError):
    pass


class PayloadTooLarge(ServerError):
    pass


class NotReady(ServerError):
    pass


class ClientDisconnected(ServerError):
    """The client went away before its answer was ready (the work was cancelled)."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request {request_id}: the client disconnected")


class AdapterCapacityError(ServerError):
    """Every resident adapter is busy or pinned and none freed up in time."""


class QueueTimeout(ServerError):
    """No engine replica began the request in time: shed with a retryable 503 instead of
    letting a queue on busy replicas hold it for as long as the backlog lasts."""


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    type: str
    code: str


_BAD = "invalid_request_error"
_CONFLICT = "conflict_error"

# exception class -> (HTTP status, OpenAI `type`, default `code`). The only such table.
ERRORS: dict[type[BaseException], ErrorSpec] = {
    # the server's own
    InvalidRequest: ErrorSpec(400, _BAD, "invalid_value"),
    Unauthorized: ErrorSpec(401, "authentication_error", "invalid_api_key"),
    PermissionDenied: ErrorSpec(403, "permission_error", "insufficient_scope"),
    NotFound: ErrorSpec(404, _BAD, "not_found"),
    ModelNotFound: ErrorSpec(404, _BAD, "model_not_found"),
    Conflict: ErrorSpec(409, _CONFLICT, "conflict"),
    PayloadTooLarge: ErrorSpec(413, _BAD, "upload_too_large"),
    NotReady: ErrorSpec(503, "service_unavailable", "not_ready"),
    AdapterCapacityError: ErrorSpec(503, "service_unavailable", "adapter_capacity"),
    QueueTimeout: ErrorSpec(503, "service_unavailable", "queue_timeout"),
    # nginx's "client closed request": nobody reads it, but the request log and metrics do
    ClientDisconnected: ErrorSpec(499, _BAD, "client_closed_request"),
    # the engine's
    EngineInputError: ErrorSpec(400, _BAD, "invalid_value"),
    AdapterLoadError: ErrorSpec(500, "server_error", "adapter_load_failed"),
    EngineUnavailable: ErrorSpec(503, "service_unavailable", "engine_unavailable"),
    # the registry's (adapters/)
    adapters.RegistryError: ErrorSpec(400, _BAD, "registry_error"),
    adapters.AdapterNotFound: ErrorSpec(404, _BAD, "not_found"),
    adapters.AdapterRejected: ErrorSpec(400, _BAD, "adapter_rejected"),
    adapters.AdapterTampered: ErrorSpec(409, _CONFLICT, "adapter_tampered"),
    adapters.AdapterInUse: ErrorSpec(409, _CONFLICT, "adapter_in_use"),
    # the router's (router/)
    router.RouterError: ErrorSpec(400, _BAD, "invalid_request"),
    router.InvalidExperiment: ErrorSpec(400, _BAD, "invalid_experiment"),
    router.FeedbackInvalid: ErrorSpec(400, _BAD, "invalid_feedback"),
    router.ExperimentNotFound: ErrorSpec(404, _BAD, "experiment_not_found"),
    router.AliasNotFound: ErrorSpec(404, _BAD, "alias_not_found"),
    router.InvalidAlias: ErrorSpec(400, _BAD, "invalid_alias"),
    router.AliasConflict: ErrorSpec(409, _CONFLICT, "alias_conflict"),
    router.RequestNotFound: ErrorSpec(404, _BAD, "request_not_found"),
    router.FeedbackForbidden: ErrorSpec(403, "permission_error", "feedback_forbidden"),
    router.ExperimentConflict: ErrorSpec(409, _CONFLICT, "experiment_conflict"),
    router.FeedbackConflict: ErrorSpec(409, _CONFLICT, "client_id_reused"),
    # the fine-tuning API's (finetune/)
    finetune.FineTuneError: ErrorSpec(400, _BAD, "invalid_value"),
    finetune.InvalidFile: ErrorSpec(400, _BAD, "invalid_file"),
    finetune.TooLarge: ErrorSpec(413, _BAD, "file_too_large"),
    finetune.FileNotFound: ErrorSpec(404, _BAD, "file_not_found"),
    finetune.JobNotFound: ErrorSpec(404, _BAD, "job_not_found"),
    finetune.JobConflict: ErrorSpec(409, _CONFLICT, "job_not_cancellable"),
}

_INTERNAL = ErrorSpec(500, "server_error", "internal_error")
# Statuses Starlette raises itself (unknown route, wrong method) and the types they get.
_HTTP_TYPES = {401: "authentication_error", 403: "permission_error", 409: _CONFLICT,
               503: "service_unavailable"}


def spec_of(exc: BaseException) -> ErrorSpec | None:
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]
    return None


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def describe(exc: BaseException) -> tuple[int, dict]:
    """(status, body) for any exception; unknown ones are our bug: a 500 that hides details."""
    spec = spec_of(exc)
    if spec is None:
        return _INTERNAL.status, error_body(f"internal error: {exc.__class__.__name__}",
                                            _INTERNAL.type, None, _INTERNAL.code)
    code = getattr(exc, "code", None) or spec.code
    message = getattr(exc, "message", None) or str(exc)
    return spec.status, error_body(message, spec.type, getattr(exc, "param", None), code)


def to_response(exc: BaseException, headers: dict[str, str] | None = None) -> JSONResponse:
    status, body = describe(exc)
    if status == 503:  # every 503 here is worth retrying: say when
        headers = {"Retry-After": "1", **(headers or {})}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_error(exc: RequestValidationError) -> InvalidRequest:
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return InvalidRequest("We could not parse the JSON body of your request. "
                              "(The request body must be valid JSON.)", code="invalid_json")
    if first.get("type") == "extra_forbidden":
        return InvalidRequest(f"Unrecognized request argument supplied: {param}", param=param,
                              code="unknown_parameter")
    ctx = first.get("ctx") or {}
    if first.get("type") in ("unsupported_parameter", "invalid_string"):  # our own checks
        named = ctx.get("param") or param
        return InvalidRequest(first.get("msg", "invalid request"), param=named,
                              code=first["type"])
    msg = first.get("msg", "invalid request")
    param = param or ctx.get("param")  # a rule across fields names the one it blames
    if param:
        msg = f"Invalid value for '{param}': {msg}"
    return InvalidRequest(msg, param=param)


def install_error_handlers(app: FastAPI) -> None:
    async def known(request: Request, exc: Exception) -> JSONResponse:
        return to_response(exc)

    for cls in ERRORS:
        app.add_exception_handler(cls, known)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return to_response(_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        code = "not_found" if status == 404 else None
        kind = _HTTP_TYPES.get(status, "server_error" if status >= 500 else _BAD)
        return JSONResponse(error_body(str(exc.detail), kind, None, code), status_code=status,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return to_response(exc)
