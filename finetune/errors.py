"""The fine-tuning API's refusals; server/errors.py maps each to an OpenAI-shaped status."""

from __future__ import annotations

__all__ = ["FileNotFound", "FineTuneError", "InvalidFile", "JobConflict", "JobNotFound",
           "TooLarge"]


class FineTuneError(Exception):
    """A bad value in a files or jobs request (400); `param` names the field."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


class InvalidFile(FineTuneError):
    """A training or validation file that fails the data checks (its line named)."""


class TooLarge(FineTuneError):
    """An upload over the size limit (413)."""


class FileNotFound(FineTuneError):
    """No such file, or not the caller's (404: another key's ids do not exist for you)."""


class JobNotFound(FineTuneError):
    """No such job, or not the caller's."""


class JobConflict(FineTuneError):
    """The job is in a state the action does not apply to (409)."""
