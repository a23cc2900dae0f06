"""Wire formats of the router's HTTP API (admin experiments, client feedback)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "FEEDBACK_KINDS",
    "ExperimentCreate",
    "FeedbackIn",
    "VariantSpec",
    "WeightsUpdate",
]

FEEDBACK_KINDS = ("thumb", "score", "label", "correction", "preference")


class _Admin(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VariantSpec(_Admin):
    ref: str = Field(min_length=1, max_length=200, description="name@version, name, or 'base'")
    weight: int = Field(ge=0, le=1_000_000)


class ExperimentCreate(_Admin):
    alias: str = Field(min_length=1, max_length=64)
    variants: list[VariantSpec] = Field(min_length=2)
    name: str | None = Field(default=None, min_length=1, max_length=64)
    control: str | None = None
    metric: Literal["thumbs", "score"] = "thumbs"
    retention: bool = False
    score_min: float = 1.0
    score_max: float = 5.0
    labels: list[str] = Field(default_factory=list)
    description: str = ""
    salt: str | None = Field(default=None, min_length=1, max_length=128)


class WeightsUpdate(_Admin):
    variants: list[VariantSpec] = Field(min_length=2)


class FeedbackIn(BaseModel):
    """One feedback record; exactly one of thumb / score / label / correction / preferred_over.

    Unknown fields are refused: a misspelt field would otherwise lose the feedback silently.
    """

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    thumb: Literal["up", "down"] | None = None
    score: float | None = None
    label: str | None = Field(default=None, min_length=1, max_length=100)
    correction: str | None = Field(default=None, min_length=1, max_length=100_000)
    preferred_over: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="another request id: this request's answer is preferred over that one's",
    )
    comment: str | None = Field(default=None, max_length=10_000)
    client_id: str | None = Field(default=None, min_length=1, max_length=200)
    user: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _exactly_one(self) -> FeedbackIn:
        given = [k for k in ("thumb", "score", "label", "correction", "preferred_over")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of thumb, score, label, correction, preferred_over "
                f"(got {', '.join(given) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        if self.thumb is not None:
            return "thumb"
        if self.score is not None:
            return "score"
        if self.label is not None:
            return "label"
        if self.correction is not None:
            return "correction"
        return "preference"
