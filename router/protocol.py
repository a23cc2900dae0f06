"""Wire formats of the router's HTTP API (admin experiments, client feedback).

Requests are validated on the way in; the response models describe what the routes send back,
so `/openapi.json` documents the real bodies. Response models forbid extra keys and the
routes validate every body against them: a key added to `Experiment.as_dict()`,
`FeedbackRecord.as_dict()` or `compute_results()` without its model fails loudly in tests
instead of going out undocumented. Field order follows those dicts, so the JSON is unchanged.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

__all__ = [
    "FEEDBACK_KINDS",
    "ExperimentCreate",
    "ExperimentDeleted",
    "ExperimentInfo",
    "ExperimentList",
    "ExperimentResults",
    "ExperimentView",
    "FeedbackIn",
    "FeedbackRecord",
    "FeedbackView",
    "Interval",
    "LatencyStats",
    "MeanLift",
    "ProportionLift",
    "ResultsConventions",
    "ResultsSeries",
    "ScoreStats",
    "SeriesPoint",
    "SrmCheck",
    "ThumbStats",
    "TokenStats",
    "VariantResults",
    "VariantSpec",
    "VariantWeight",
    "WeightsUpdate",
]

FEEDBACK_KINDS = ("thumb", "score", "label", "correction", "preference")


class _Admin(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VariantSpec(_Admin):
    ref: str = Field(min_length=1, max_length=200, description="name@version, name, or 'base'")
    weight: int = Field(ge=0, le=1_000_000)
    system_prompt: str | None = Field(
        default=None, min_length=1, max_length=100_000,
        description="a prompt variant: `ref` answers with this system prompt first")
    name: str | None = Field(default=None, min_length=1, max_length=64,
                             description="a prompt variant's key (default '<ref>+prompt')")

    def spec(self) -> tuple:
        return (self.ref, self.weight, self.name, self.system_prompt)


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
    mode: Literal["fixed", "bandit"] = Field(
        default="fixed", description="bandit: Thompson sampling sets the weights on a schedule")
    min_share: float = Field(default=0.1, ge=0, le=0.5,
                             description="bandit: the least share of new users any variant gets")
    bandit_interval_s: float = Field(default=60.0, gt=0, le=86400,
                                     description="bandit: seconds between weight updates")
    guardrails: dict[str, float] = Field(
        default_factory=dict,
        description="limits: latency_p95_ms, error_rate, negative_rate, tokens_per_request, "
                    "min_requests (docs/router.md#guardrails)")
    auto_promote: bool = Field(
        default=False, description="end by promoting the winner to the alias once the "
                                   "sequential test decides (docs/router.md#promotion)")


class VariantWeightIn(_Admin):
    ref: str = Field(min_length=1, max_length=200, description="a variant's key (or its ref)")
    weight: int = Field(ge=0, le=1_000_000)


class WeightsUpdate(_Admin):
    variants: list[VariantWeightIn] = Field(min_length=2)


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


# -- responses ---------------------------------------------------------------------------


class _Wire(BaseModel):
    """Base of the response models: an unknown key is drift between the code that builds a
    body and its documented shape, so it is refused rather than passed through."""

    model_config = ConfigDict(extra="forbid")


Interval = Annotated[
    tuple[float, float], Field(description="95% interval [low, high]")
]
ExperimentStatus = Literal["draft", "running", "paused", "stopped"]
Metric = Literal["thumbs", "score"]


class VariantWeight(_Wire):
    ref: str = Field(description="the variant's key: name@version (pinned at creation), "
                                 "'base', or a prompt variant's name")
    weight: int
    serves: str | None = Field(description="a prompt variant's pinned ref; null otherwise")
    system_prompt: str | None


class GuardrailCut(_Wire):
    variant: str
    reason: str
    at: str


class ExperimentInfo(_Wire):
    """An experiment as `Experiment.as_dict()` gives it (the salt stays private)."""

    id: int
    name: str
    alias: str
    status: ExperimentStatus
    metric: Metric
    control: str
    retention: bool
    score_min: float
    score_max: float
    labels: list[str]
    description: str
    created_at: str
    started_at: str | None = Field(description="first start; null while a draft")
    stopped_at: str | None
    weights_changed_at: str | None = Field(
        description="last weight change after the start; the SRM check counts from here")
    variants: list[VariantWeight]
    mode: Literal["fixed", "bandit"]
    min_share: float
    bandit_interval_s: float
    guardrails: dict[str, float]
    cut: list[GuardrailCut] = Field(description="variants a guardrail cut off, with the reason")
    auto_promote: bool


class _ExperimentObject(_Wire):
    object: Literal["experiment"]


class ExperimentView(ExperimentInfo, _ExperimentObject):
    """One experiment as the admin API returns it.

    `_ExperimentObject` comes last among the bases so that pydantic, which collects fields
    from the last base first, puts `object` ahead of the rest, where the bodies always had it.
    """


class ExperimentList(_Wire):
    object: Literal["list"]
    data: list[ExperimentView]


class ExperimentDeleted(_Wire):
    object: Literal["experiment.deleted"]
    name: str
    deleted: bool


class FeedbackRecord(_Wire):
    """A stored feedback record: the new one, or the earlier one a client_id retry matched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int
    client_id: str | None
    request_id: str
    kind: Literal["thumb", "score", "label", "correction", "preference"]
    value: float | None = Field(description="thumb up 1, down 0; the score; null otherwise")
    label: str | None
    correction: str | None
    preferred_over: str | None
    comment: str | None
    user: str | None
    created_at: str

    def as_dict(self) -> dict:
        return self.model_dump()


class FeedbackView(FeedbackRecord):
    """What POST /v1/feedback answers: the record, tagged (`object` first, as OpenAI does)."""

    object: Literal["feedback"]

    @model_serializer(mode="wrap")
    def _object_first(self, handler: SerializerFunctionWrapHandler) -> dict:
        data = handler(self)
        return {"object": data.pop("object"), **data}


class LatencyStats(_Wire):
    p50: float | None
    p95: float | None


class TokenStats(_Wire):
    prompt: int
    completion: int
    completion_mean: float | None


class ThumbStats(_Wire):
    n: int = Field(description="requests with a thumb (the latest per request counts)")
    positive: int
    rate: float | None
    ci95: Interval | None = Field(description="Wilson score interval")


class ScoreStats(_Wire):
    n: int = Field(description="requests with a score (the latest per request counts)")
    mean: float | None
    sd: float | None
    ci95: Interval | None = Field(description="Student t interval of the mean")


Decision = Literal["keep-running", "variant-wins", "control-wins", "no-difference"]


class ProportionLift(_Wire):
    """Thumbs lift of a variant over the control. `z` is absent until both sides have data
    (it is not null then: nothing was computed), and null when the test is undefined."""

    test: Literal["two-proportion z-test (pooled)"]
    absolute: float | None
    absolute_ci95: Interval | None
    relative: float | None
    p_value: float | None
    chance_to_win: float | None = Field(description="P(variant > control), Beta posteriors")
    z: float | None = None


class MeanLift(_Wire):
    """Score lift of a variant over the control. `t` and `df` are present only once both
    sides have a standard deviation (two scores or more each)."""

    test: Literal["Welch t-test"]
    absolute: float | None
    absolute_ci95: Interval | None
    relative: float | None
    p_value: float | None
    chance_to_win: None = Field(description="computed for thumbs only")
    t: float | None = None
    df: float | None = None


Lift = Annotated[ProportionLift | MeanLift, Field(discriminator="test")]


class PerUserStats(_Wire):
    """The metric over users, the randomisation unit: sum of values over sum of ratings, with
    a delta-method standard error over users (docs/router.md#per-user-statistics)."""

    users: int = Field(description="units with at least one rating")
    ratings: int
    value: float | None
    se: float | None
    ci95: Interval | None


class SequentialTest(_Wire):
    """The mixture SPRT on the per-user difference: valid however often it is read."""

    test: Literal["mixture SPRT (Gaussian mixture, always-valid)"]
    estimate: float | None
    se: float | None
    p_value: float | None = Field(
        description="always-valid p-value: the smallest over every look so far")
    confidence_sequence: Interval | None = Field(
        description="the intersection of every look's interval; null before the first look")
    decision: Decision
    mde: float | None = Field(description="what a fixed-horizon test could detect now, 80% power")
    alpha: float
    tau: float
    min_effect: float
    looks: int = Field(description="ratings after which both arms had min_users rating users")
    min_users: int = Field(description="rating users each arm needs before a look counts")


class PerUserLift(_Wire):
    test: Literal["delta method over users (z)"]
    absolute: float | None
    absolute_ci95: Interval | None
    z: float | None
    p_value: float | None = Field(description="fixed-horizon: valid read once, not under peeking")
    sequential: SequentialTest | None = Field(description="null until both sides have 2 rating users")
    decision: Decision


class VariantResults(_Wire):
    variant: str
    is_control: bool
    weight: int
    requests: int = Field(description="exposed requests (served while running)")
    users: int = Field(description="distinct units; each request without a unit counts as one")
    errors: int
    feedback: int = Field(description="feedback records of any kind")
    requests_with_feedback: int
    feedback_rate: float | None
    latency_ms: LatencyStats
    tokens: TokenStats
    finish_reasons: dict[str, int]
    thumbs: ThumbStats
    score: ScoreStats
    lift: Lift | None = Field(description="null for the control")
    per_user: PerUserStats
    per_user_lift: PerUserLift | None = Field(description="null for the control")


class ResultsConventions(_Wire):
    """The statistical conventions, stated in words for readers of the JSON."""

    proportion_interval: str
    mean_interval: str
    lift_test: str
    chance_to_win: str
    srm: str
    counting: str
    per_user: str
    sequential: str


class SrmCheck(_Wire):
    """Sample-ratio mismatch: units by the variant of their first exposure against weights."""

    units: dict[str, int]
    expected: dict[str, float]
    chi2: Literal["inf"] | float | None = Field(
        description="'inf' when a variant of weight 0 received units")
    df: int | None
    p_value: float | None
    flagged: bool
    threshold: float
    since: str | None


class SeriesPoint(_Wire):
    t: str = Field(description="end of the time bin")
    n: int
    value: float | None = Field(description="cumulative rate or mean score")
    ci95: Interval | None


class ResultsSeries(_Wire):
    """Cumulative metric per variant by time bin. Before any feedback the bin is null and
    `y_range` is absent."""

    bin_seconds: int | None
    bin: str | None
    variants: dict[str, list[SeriesPoint]]
    y_range: tuple[float, float] | None = None


class ExperimentResults(_Wire):
    """What `compute_results()` returns: per-variant counts and statistics, SRM, time series."""

    experiment: ExperimentInfo
    metric: Metric
    control: str
    generated_at: str
    conventions: ResultsConventions
    variants: list[VariantResults]
    decisions: dict[str, Decision] = Field(description="per variant against the control")
    srm: SrmCheck
    series: ResultsSeries
