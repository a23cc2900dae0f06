"""Wire formats: the OpenAI-compatible request/response models and the admin API's.

OpenAI-facing requests accept unknown fields and ignore them (clients send fields we do not
implement, like `frequency_penalty`); admin requests forbid them, so a typo is an error.
Field constraints here produce 400s with the offending parameter named.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

__all__ = [
    "AdminModel",
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "ErrorBody",
    "ModelCard",
    "ModelList",
    "RegisterFromPath",
    "StreamOptions",
    "Usage",
    "now",
]

Number = Annotated[float, Field(allow_inf_nan=False)]


def now() -> int:
    return int(time.time())


class OpenAIModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AdminModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(OpenAIModel):
    include_usage: StrictBool = False


class ContentPart(OpenAIModel):
    type: Literal["text"]
    text: str


class ChatMessage(OpenAIModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class _SamplingFields(OpenAIModel):
    model: str = Field(min_length=1)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: Number | None = Field(default=None, ge=0.0, le=2.0)
    top_p: Number | None = Field(default=None, gt=0.0, le=1.0)
    n: StrictInt = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    seed: StrictInt | None = None
    user: str | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    # Extension (same name as vLLM's): each choice also carries its generated token ids.
    return_token_ids: StrictBool = False
    # Extensions (vLLM's names): generate at least `min_tokens`; never stop at EOS.
    min_tokens: StrictInt = Field(default=0, ge=0)
    ignore_eos: StrictBool = False

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=20)


class CompletionRequest(_SamplingFields):
    prompt: str | list[StrictInt] | list[str]
    logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
    echo: StrictBool = False


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "loraswap"
    root: str
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


__all__ += ["PinRequest"]
