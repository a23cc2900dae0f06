"""The router's exceptions. They say what went wrong; the server's one error table
(`server/errors.py`) decides the HTTP status, type and code, so none of that lives here."""

from __future__ import annotations

__all__ = [
    "AliasConflict",
    "AliasNotFound",
    "ExperimentConflict",
    "ExperimentNotFound",
    "FeedbackConflict",
    "FeedbackForbidden",
    "FeedbackInvalid",
    "InvalidAlias",
    "InvalidExperiment",
    "RequestNotFound",
    "RouterError",
]


class RouterError(Exception):
    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ExperimentNotFound(RouterError):
    """No experiment by that name."""


class InvalidExperiment(RouterError):
    """A variant, weight, alias or transition that cannot be."""


class ExperimentConflict(RouterError):
    """The name or alias is taken, or the experiment is in the wrong state."""


class RequestNotFound(RouterError):
    """Feedback names a request id the log does not have."""


class FeedbackInvalid(RouterError):
    """A feedback value that does not fit its kind or the experiment's scale."""


class FeedbackForbidden(RouterError):
    """A key gave feedback on a request another key made."""


class FeedbackConflict(RouterError):
    """A client_id reused with a different body."""


class AliasNotFound(RouterError):
    """No alias by that name (pointer or experiment)."""


class InvalidAlias(RouterError):
    """A target or routing rule that cannot be."""


class AliasConflict(RouterError):
    """The alias is in use in a way that forbids the change (a running experiment)."""
