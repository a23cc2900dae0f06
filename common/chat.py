"""The one chat-message schema: what the server accepts, training learns from and the
feedback export writes.

Why one: the export turns logged requests into training rows. If the server took a role or
a content shape that training refused, feedback on exactly those requests could never be
trained on. Roles and content follow OpenAI's chat format (text parts only); `developer` is
OpenAI's newer name for `system` and reaches the chat template as `system`, in serving and in
training alike, so an adapter is trained on the prompt it will be served.
"""

from __future__ import annotations

import json
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "FUNCTION_NAME",
    "ROLES",
    "ROLE_ALIASES",
    "ChatMessage",
    "ChatRowError",
    "ContentPart",
    "Role",
    "ToolCallItem",
    "parse_turn",
]

Role = Literal["system", "user", "assistant", "developer", "tool"]
# OpenAI's limit on a function name; the same pattern for tool definitions and calls.
FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"
ROLES: tuple[str, ...] = get_args(Role)
# What the chat template sees instead (templates know system, user, assistant, often tool).
ROLE_ALIASES = {"developer": "system"}


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class CalledFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=FUNCTION_NAME)
    arguments: str  # JSON text, as OpenAI sends it

    @field_validator("arguments", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        # A string from a client; an object from our own turns (request log, training rows),
        # which hold arguments as the template takes them.
        parsed = value
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
        if not isinstance(parsed, dict):
            raise PydanticCustomError("invalid_tool_arguments",
                                      "tool call `arguments` must be a JSON object in a string")
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


class ToolCallItem(BaseModel):
    """An earlier assistant turn's tool call, as the client sends it back in the history."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(BaseModel):
    """One message; unknown fields (audio, refusal, ...) are ignored, as OpenAI clients
    send fields we do not implement."""

    model_config = ConfigDict(extra="ignore")

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallItem] | None = Field(default=None, max_length=128)
    tool_call_id: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _content_unless_assistant(self) -> ChatMessage:
        # `tool_call_id` is not required of a tool message: request logs written before tool
        # calling existed hold tool turns without one, and their export must still train.
        # Only an assistant turn may be empty (OpenAI's: one that carried tool calls).
        if self.content is None and self.role != "assistant":
            raise PydanticCustomError("missing_content",
                                      "a {role} message needs `content`", {"role": self.role})
        if self.tool_calls and self.role != "assistant":
            raise PydanticCustomError("misplaced_tool_calls",
                                      "only an assistant message may carry `tool_calls`")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)

    def turn(self) -> dict[str, Any]:
        """{role, content} as the chat template takes it: plain text, role aliases applied;
        tool calls with their arguments as objects (what templates iterate over) and a tool
        reply's `tool_call_id`, only when present, so plain turns stay two keys."""
        out: dict[str, Any] = {"role": ROLE_ALIASES.get(self.role, self.role),
                               "content": self.text()}
        if self.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.function.name,
                              "arguments": json.loads(c.function.arguments)}}
                for c in self.tool_calls]
        if self.role == "tool" and self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        return out


class ChatRowError(ValueError):
    """A message that does not fit the schema; the text names the field, for a data report."""


def parse_turn(value: object, where: str) -> dict[str, Any]:
    """Validate one message (`where` names it, e.g. "messages[2]") and return its turn."""
    if not isinstance(value, dict):
        raise ChatRowError(f"`{where}` is not an object")
    try:
        return ChatMessage.model_validate(value).turn()
    except ValidationError as exc:
        error = exc.errors()[0]
    if not error["loc"]:  # a rule across fields (tool calls on a user turn, ...)
        raise ChatRowError(f"`{where}`: {error['msg']}")
    field = ".".join(str(part) for part in error["loc"])
    if field == "role" or field.startswith("content"):
        field = field.split(".")[0]
    if field == "role":
        raise ChatRowError(f"`{where}.role` is {value.get('role')!r}; expected one of "
                           f"{', '.join(ROLES)}")
    if field == "content":
        raise ChatRowError(f"`{where}.content` must be a string or a list of text parts "
                           '({"type": "text", "text": ...})')
    raise ChatRowError(f"`{where}.{field}` is invalid")
