"""The OpenAI request bodies we accept, and the policy for every field we do not honour.

Why strict: a field that is accepted and ignored breaks a client silently (a structured-output
client gets prose, an agent gets no tool call). So every field is one of:
- honoured (declared below, with OpenAI's bounds);
- one of vLLM's extensions we honour (`VLLM_EXTENSIONS`);
- an OpenAI field we do not implement: refused with 400 `unsupported_parameter` naming it,
  unless it is absent, null or set to its no-op value (`NOOP`, e.g. `store: false`);
- anything else: 400 `unknown_parameter`.
Strings are checked for lone UTF-16 surrogates (JSON allows them, UTF-8 cannot encode them,
and the tokenizer would fail on them with a 500).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator
from pydantic_core import PydanticCustomError

from common.chat import FUNCTION_NAME, ChatMessage
from server.tool_calls import forced_schema

__all__ = [
    "LIMITS",
    "NOOP",
    "VLLM_EXTENSIONS",
    "ChatCompletionRequest",
    "CompletionRequest",
    "StreamOptions",
    "check_strings",
]

Number = Annotated[float, Field(allow_inf_nan=False)]
Int64 = Annotated[int, Field(strict=True, ge=-(2**63), le=2**63 - 1)]

# Documented bounds (docs/server.md); OpenAI's own where it has one.
LIMITS = {"stop": 4, "stop_chars": 256, "messages": 2048, "stop_token_ids": 64,
          "logit_bias": 300, "tools": 128, "request_bytes": 8 * 1024 * 1024}

# OpenAI fields we do not implement -> the values that ask for nothing (accepted, no effect).
NOOP: dict[str, tuple[Any, ...]] = {
    "audio": (None,), "modalities": (None, ["text"]), "prediction": (None,),
    "web_search_options": (None,), "functions": (None, []), "function_call": (None, "none"),
    "reasoning_effort": (None,), "verbosity": (None,),
    "store": (None, False), "service_tier": (None, "auto", "default"),
    "prompt_cache_key": (None,),
    "suffix": (None, ""),
}
VLLM_EXTENSIONS = ("top_k", "min_p", "repetition_penalty", "stop_token_ids", "min_tokens",
                   "ignore_eos", "return_token_ids", "structured_outputs")


def check_strings(value: Any, where: str = "") -> None:
    """400 for a lone surrogate anywhere in the body (keys included)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise PydanticCustomError(
                "invalid_string", "{where} contains a lone UTF-16 surrogate, which is not "
                "valid Unicode text", {"where": where or "the body", "param": where}) from None
    elif isinstance(value, dict):
        for k, v in value.items():
            check_strings(k, where)
            check_strings(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_strings(v, f"{where}[{i}]")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's `response_format`: text, JSON mode, or JSON that validates against a schema."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_iff_json_schema(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("`json_schema` is required with type json_schema, and only then")
        return self


class StructuredOutputs(BaseModel):
    """vLLM's extension: constrain the output to a regex, one of some strings, or a schema."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    regex: str | None = Field(default=None, min_length=1, max_length=4096)
    choice: list[Annotated[str, Field(min_length=1)]] | None = \
        Field(default=None, min_length=1, max_length=256)
    json_: dict[str, Any] | None = Field(default=None, alias="json")

    @model_validator(mode="after")
    def _exactly_one(self) -> StructuredOutputs:
        if sum(x is not None for x in (self.regex, self.choice, self.json_)) != 1:
            raise ValueError("give exactly one of `regex`, `choice`, `json`")
        return self

    def engine(self) -> dict:
        if self.regex is not None:
            return {"regex": self.regex}
        if self.choice is not None:
            return {"choice": list(self.choice)}
        return {"json": self.json_}


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=FUNCTION_NAME)


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: FunctionName


class MergedAdapters(BaseModel):
    """A per-request mixture, in LoRAX's `merged_adapters` shape: served as one merged
    adapter version, made once and cached by content (server/mixtures.py)."""

    model_config = ConfigDict(extra="forbid")
    ids: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        min_length=1, max_length=16)
    weights: list[Annotated[float, Field(allow_inf_nan=True)]] = Field(min_length=1,
                                                                        max_length=16)
    merge_strategy: Literal["linear", "cat", "ties", "dare_linear", "dare_ties", "svd"] = \
        "linear"
    density: float | None = None
    majority_sign_method: Literal["total", "frequency"] = "total"

    @model_validator(mode="after")
    def _same_length(self) -> MergedAdapters:
        if len(self.ids) != len(self.weights):
            raise PydanticCustomError("merged_adapters", "merged_adapters: ids and weights "
                                      "must have the same length")
        return self


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _policy(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        check_strings(data)
        data = dict(data)
        for name, noop in NOOP.items():
            if name not in data or name in cls.model_fields:
                continue
            if data[name] not in noop:
                raise PydanticCustomError(
                    "unsupported_parameter", "'{param}' is not supported by this server "
                    "(see the supported fields in docs/server.md)", {"param": name})
            del data[name]
        return data


class _SamplingFields(_Request):
    model: str = Field(min_length=1, max_length=256)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: Number | None = Field(default=None, ge=0.0, le=2.0)
    top_p: Number | None = Field(default=None, gt=0.0, le=1.0)
    n: StrictInt = Field(default=1, ge=1, le=128)
    stop: str | list[Annotated[str, Field(min_length=1, max_length=LIMITS["stop_chars"])]] | None \
        = Field(default=None, max_length=LIMITS["stop"])
    seed: Int64 | None = None
    user: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)
    # OpenAI's bounds: 16 pairs, keys up to 64 characters, values up to 512. An alias's
    # routing rules may match on it (docs/router.md#routing-rules); nothing else reads it.
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] \
        | None = Field(default=None, max_length=16)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: Number | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: Number | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100, allow_inf_nan=False)]] | None = \
        Field(default=None, max_length=LIMITS["logit_bias"])
    # vLLM's extensions (same names, same meaning)
    top_k: StrictInt | None = Field(default=None, ge=-1, le=1_000_000)
    min_p: Number | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: Number | None = Field(default=None, gt=0.0, le=10.0)
    stop_token_ids: list[Annotated[int, Field(strict=True, ge=0, le=2**31 - 1)]] | None = \
        Field(default=None, max_length=LIMITS["stop_token_ids"])
    structured_outputs: StructuredOutputs | None = None
    return_token_ids: StrictBool = False  # each choice also carries its generated token ids
    min_tokens: StrictInt = Field(default=0, ge=0, le=1_000_000)
    ignore_eos: StrictBool = False
    # LoRAX's extension: with it, `model` names the base and the mixture is served
    merged_adapters: MergedAdapters | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def structured(self) -> dict | None:
        """The engine's constraint for this request, or None for free text."""
        return self.structured_outputs.engine() if self.structured_outputs else None

    def unit(self) -> str | None:
        """The experiment unit the body names: `user`, else OpenAI's `safety_identifier`."""
        return self.user or self.safety_identifier


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=LIMITS["messages"])
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[ToolDefinition] | None = Field(default=None, max_length=LIMITS["tools"])
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None

    @model_validator(mode="after")
    def _one_constraint(self) -> ChatCompletionRequest:
        formatted = self.response_format is not None and self.response_format.type != "text"
        if formatted and self.structured_outputs is not None:
            raise PydanticCustomError("unsupported_parameter", "give either response_format or "
                                      "structured_outputs, not both", {"param": "response_format"})
        names = [t.function.name for t in self.tools or ()]
        if len(set(names)) != len(names):
            raise PydanticCustomError("invalid_value", "tool names must be unique",
                                      {"param": "tools"})
        mode = self.tool_mode()
        if mode in ("required", "named") and not names:
            raise PydanticCustomError("invalid_value", "tool_choice {choice!r} needs `tools`",
                                      {"param": "tool_choice", "choice": mode})
        if mode == "named" and self.forced_name() not in names:
            raise PydanticCustomError(
                "invalid_value", "tool_choice names the function {name!r}, which is not in "
                "`tools`", {"param": "tool_choice", "name": self.forced_name()})
        if mode in ("required", "named") and (formatted or self.structured_outputs):
            raise PydanticCustomError(
                "unsupported_parameter", "a forced tool call constrains the output itself; "
                "drop response_format / structured_outputs", {"param": "tool_choice"})
        return self

    def tool_mode(self) -> str:
        """none, auto, required or named; OpenAI's default is auto when tools are given."""
        if isinstance(self.tool_choice, NamedToolChoice):
            return "named"
        if self.tool_choice is not None:
            return self.tool_choice if self.tools or self.tool_choice != "auto" else "none"
        return "auto" if self.tools else "none"

    def forced_name(self) -> str | None:
        return self.tool_choice.function.name if isinstance(self.tool_choice, NamedToolChoice) \
            else None

    def tool_dicts(self) -> list[dict[str, Any]] | None:
        """The tools as the chat template takes them (OpenAI's JSON)."""
        if not self.tools:
            return None
        return [t.model_dump(exclude_none=True) for t in self.tools]

    def structured(self) -> dict | None:
        if self.tool_mode() in ("required", "named"):
            assert self.tools
            return {"json": forced_schema([t.function.model_dump() for t in self.tools],
                                          self.forced_name(), self.parallel_tool_calls)}
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return super().structured()
        if fmt.type == "json_object":
            return {"json_object": True}
        assert fmt.json_schema is not None
        return {"json": fmt.json_schema.schema_ or {"type": "object"}}


class CompletionRequest(_SamplingFields):
    prompt: str | list[StrictInt] | list[str]
    logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
    echo: StrictBool = False
    best_of: StrictInt | None = Field(default=None, ge=1, le=128)

