"""Router errors carry the HTTP status and OpenAI-style type/code the routes answer with."""

from __future__ import annotations

__all__ = [
    "ExperimentConflict",
    "ExperimentNotFound",
    "FeedbackConflict",
    "FeedbackForbidden",
    "FeedbackInvalid",
    "InvalidExperiment",
    "RequestNotFound",
    "RouterError",
]


class RouterError(Exception):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_body(self) -> dict:
        return {
            "error": {"message": self.message, "type": self.type, "param": self.param,
                      "code": self.code}
        }


class ExperimentNotFound(RouterError):
    status = 404
    code = "experiment_not_found"


class InvalidExperiment(RouterError):
    code = "invalid_experiment"


class ExperimentConflict(RouterError):
    status = 409
    code = "experiment_conflict"


class RequestNotFound(RouterError):
    status = 404
    code = "request_not_found"


class FeedbackInvalid(RouterError):
    status = 422
    code = "invalid_feedback"


class FeedbackForbidden(RouterError):
    status = 403
    type = "permission_error"
    code = "feedback_forbidden"


class FeedbackConflict(RouterError):
    status = 409
    code = "client_id_reused"
