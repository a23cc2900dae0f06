"""Wire formats: the OpenAI-compatible requests and responses, and the admin API's.

The OpenAI request bodies and the policy for fields we do not honour live in
server/openai_requests.py; admin requests forbid unknown fields, so a typo is an error.
Field constraints produce 400s with the offending parameter named. Responses are models
too, so `/openapi.json` describes what the server really returns; fields that only appear
on request (`token_ids`, `prompt_token_ids`, a stream chunk's `usage`) are left out when unset.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.chat import ChatMessage, ContentPart
from server.openai_requests import ChatCompletionRequest, CompletionRequest, StreamOptions

__all__ = [
    "AdapterView",
    "AdminModel",
    "ChatChoice",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatMessage",
    "ChunkChoice",
    "CompletionChoice",
    "CompletionRequest",
    "CompletionResponse",
    "DeltaToolCall",
    "ContentPart",
    "EngineView",
    "ErrorBody",
    "IngressView",
    "ModelCard",
    "ModelList",
    "PinRequest",
    "RegisterFromPath",
    "ResidencyView",
    "StreamOptions",
    "ToolCall",
    "Usage",
    "now",
]

def _unset(value: object) -> bool:
    return value is None


def now() -> int:
    return int(time.time())


class AdminModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens)


# -- chat responses ------------------------------------------------------------------------


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprobEntry(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprobEntry]


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = Field(default=None, exclude_if=_unset)


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None
    token_ids: list[int] | None = Field(default=None, exclude_if=_unset)


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    # vLLM's extension, with `return_token_ids`: the ids the chat template rendered to, as
    # the engine received them
    prompt_token_ids: list[int] | None = Field(default=None, exclude_if=_unset)


class DeltaFunction(BaseModel):
    name: str | None = Field(default=None, exclude_if=_unset)
    arguments: str | None = Field(default=None, exclude_if=_unset)


class DeltaToolCall(BaseModel):
    """A piece of a streamed call: the first for an index has id, type and name; later
    pieces add to `arguments`."""

    index: int
    id: str | None = Field(default=None, exclude_if=_unset)
    type: Literal["function"] | None = Field(default=None, exclude_if=_unset)
    function: DeltaFunction | None = Field(default=None, exclude_if=_unset)


class Delta(BaseModel):
    role: Literal["assistant"] | None = Field(default=None, exclude_if=_unset)
    content: str | None = Field(default=None, exclude_if=_unset)
    tool_calls: list[DeltaToolCall] | None = Field(default=None, exclude_if=_unset)


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = Field(default=None, exclude_if=_unset)


# -- completions responses -----------------------------------------------------------------


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    token_ids: list[int] | None = Field(default=None, exclude_if=_unset)
    prompt_token_ids: list[int] | None = Field(default=None, exclude_if=_unset)  # as vLLM's


class CompletionResponse(BaseModel):
    """Also each streamed chunk (OpenAI uses the same object there, usage only at the end)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = Field(default=None, exclude_if=_unset)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "loraswap"
    root: str  # the id whose weights this card serves (never a server path)
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


# -- admin ---------------------------------------------------------------------------------


class RegisterFromPath(AdminModel):
    """Register an adapter from a path the server can read (folder or archive)."""

    name: str = Field(min_length=1, max_length=64)
    path: str = Field(min_length=1)
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    metrics: dict[str, Any] | None = None
    load: bool = False  # load into the engine right away


class PinRequest(AdminModel):
    pinned: bool = True


class ScaleRequest(AdminModel):
    replicas: int = Field(ge=1, le=1024, description="engine replicas to run")


class ScaleView(BaseModel):
    replicas: int = Field(description="the target the cluster is moving to")
    current: int = Field(description="engine replicas reporting now")


class ResidencyView(BaseModel):
    state: Literal["loading", "loaded", "retiring", "failed", "unloaded"]
    loaded: bool
    pinned: bool
    in_flight: int
    replicas: list[str] | None = Field(
        default=None, description="scaled out: the engine replicas that hold the version")


class AdapterView(BaseModel):
    """A registry version as operators see it: the store path is relative to the server's
    store, and the full lineage only on the single-version view."""

    object: Literal["adapter"] = "adapter"
    id: int
    ref: str
    name: str
    version: int
    status: str
    path: str  # relative to the adapter store
    rank: int
    alpha: float
    target_modules: list[str]
    size_bytes: int
    files: dict[str, str]  # file -> sha256
    base_name: str
    base_fingerprint: str
    base_match: str
    source_kind: str
    description: str
    tags: list[str]
    metrics: dict[str, Any]
    parent: str | None = None
    dataset_fingerprint: str | None = None
    lineage: dict[str, Any] | None = Field(default=None, exclude_if=_unset)
    created_at: str
    archived_at: str | None = None
    engine: ResidencyView


class AdapterList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AdapterView]


class ReplicaView(BaseModel):
    """One engine replica of a scaled-out server, as it last reported."""

    replica: str
    pid: int
    node: str
    running: bool
    adapter_capacity: int
    loaded: list[str]
    engine_ids: list[int]
    running_requests: int
    adapter_loads: int = Field(description="versions loaded since the replica started")
    start_seconds: float | None
    seen_s_ago: float


class IngressView(BaseModel):
    """One ingress replica of a scaled-out server, as it last beat."""

    ingress: str
    pid: int
    node: str
    leader: bool = Field(description="runs the experiment decisions (guardrails, bandit "
                         "weights, auto-promotion)")
    requests: int = Field(description="generations it sent to the engine replicas")
    retries: int = Field(description="requests it retried on another engine replica")
    queue_timeouts: int = Field(description="requests it answered 503 queue_timeout")
    started_at: float
    seen_s_ago: float


class EngineView(BaseModel):
    base_model: str
    cpu: bool
    cpu_base_guard: bool
    cpu_lora_kernels: bool
    max_loras: int = Field(description="LoRA slots: adapters one batch can mix")
    max_loras_reason: str = Field(description="`set`, or how auto chose the count")
    adapter_capacity: int
    loaded: list[str]  # least recently used first
    engine_ids: list[int]
    running_requests: int  # requests the engine holds now
    replicas: list[ReplicaView] | None = Field(
        default=None, description="scaled out: each engine replica and what it holds")
    ingresses: list[IngressView] | None = Field(
        default=None, description="scaled out: each ingress replica, and which one leads")


__all__ += ["AdapterList"]
