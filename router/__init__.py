"""A/B experiments between adapter versions: assignment, request log, feedback, analysis,
export. Imports `adapters` only through the duck-typed `RegistryLike`."""

from __future__ import annotations

from router.alias_rules import RouteContext
from router.aliases import Alias
from router.errors import (
    AliasConflict,
    AliasNotFound,
    ExperimentConflict,
    ExperimentNotFound,
    FeedbackConflict,
    FeedbackForbidden,
    FeedbackInvalid,
    InvalidAlias,
    InvalidExperiment,
    RequestNotFound,
    RouterError,
)
from router.experiments import BASE_REF, Experiment, Variant
from router.feedback import Caller, FeedbackRecord
from router.protocol import ExperimentCreate, FeedbackIn, VariantSpec, WeightsUpdate
from router.requestlog import RequestRecord, Route
from router.router import Router

__all__ = [
    "Alias",
    "AliasConflict",
    "AliasNotFound",
    "BASE_REF",
    "Caller",
    "Experiment",
    "ExperimentConflict",
    "ExperimentCreate",
    "ExperimentNotFound",
    "FeedbackConflict",
    "FeedbackForbidden",
    "FeedbackIn",
    "FeedbackInvalid",
    "FeedbackRecord",
    "InvalidAlias",
    "InvalidExperiment",
    "RequestNotFound",
    "RequestRecord",
    "Route",
    "RouteContext",
    "Router",
    "RouterError",
    "Variant",
    "VariantSpec",
    "WeightsUpdate",
]
