"""Wire formats of `/v1/files` and `/v1/fine_tuning/jobs`, field for field as OpenAI's API
defines them (the official client parses these), plus loraswap's documented extension
field `loraswap` on job creation for the LoRA options OpenAI has no names for."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CheckpointList",
    "CheckpointView",
    "EventList",
    "EventView",
    "FileDeleted",
    "FileList",
    "FileView",
    "Hyperparameters",
    "JobCreate",
    "JobError",
    "JobList",
    "JobView",
    "LoraswapOptions",
    "Method",
]

Auto = Literal["auto"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileView(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None
    expires_at: int | None = None
    sha256: str = Field(description="loraswap: the stored bytes' sha256")


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileView]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class Hyperparameters(_Strict):
    """`auto` (or absent) picks loraswap's default for the method."""

    # The bounds sit on the number itself: on the union they would meet "auto" too.
    n_epochs: Auto | Annotated[int, Field(ge=1, le=50)] | None = None
    batch_size: Auto | Annotated[int, Field(ge=1, le=256)] | None = None
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=10)] | None = None
    beta: Auto | Annotated[float, Field(gt=0, le=10)] | None = Field(
        default=None, description="DPO only")


class _MethodHyper(_Strict):
    hyperparameters: Hyperparameters | None = None


class Method(_Strict):
    type: Literal["supervised", "dpo"]
    supervised: _MethodHyper | None = None
    dpo: _MethodHyper | None = None


class LoraswapOptions(_Strict):
    """loraswap's own job options (the `loraswap` field; `extra_body` in the client)."""

    rank: Literal[1, 8, 16, 32, 64, 128, 256, 320, 512] | None = Field(
        default=None, description="a rank vLLM serves (the registry refuses others); "
        "default 16, or the server's max_lora_rank when that is lower")
    alpha: float = Field(default=32.0, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    targets: str = Field(default="all-linear", min_length=1, max_length=500)
    rslora: bool = False
    max_length: int = Field(default=512, ge=16, le=32768)
    task: str | None = Field(default=None, description="a task-world task name, for its "
                             "exact-match evaluation; detected from the data when absent")
    eval_limit: int = Field(default=200, ge=0, le=100000)
    description: str = Field(default="", max_length=2000)


class JobCreate(_Strict):
    model: str = Field(min_length=1, max_length=256)
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(default=None, max_length=64)
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = Field(default=None, min_length=1, max_length=64,
                               pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = Field(default=None, max_length=0,
                                                      description="not supported: must be empty")
    loraswap: LoraswapOptions | None = None


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class JobView(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: dict[str, Any]
    model: str
    organization_id: str = "loraswap"
    result_files: list[str]
    seed: int
    status: Literal["validating_files", "queued", "running", "succeeded", "failed",
                    "cancelled"]
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    method: dict[str, Any]
    user_provided_suffix: str | None = None
    loraswap: dict[str, Any] = Field(description="the LoRA options, the registered version "
                                     "(`ref`) and the run's attempts")


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobView]
    has_more: bool


class EventView(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"]


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EventView]
    has_more: bool


class CheckpointView(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CheckpointView]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None
