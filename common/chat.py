"""The one chat-message schema: what the server accepts, training learns from and the
feedback export writes.

Why one: the export turns logged requests into training rows. If the server took a role or
a content shape that training refused, feedback on exactly those requests could never be
trained on. Roles and content follow OpenAI's chat format (text parts only); `developer` is
OpenAI's newer name for `system` and reaches the chat template as `system`, in serving and in
training alike, so an adapter is trained on the prompt it will be served.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "ROLES",
    "ROLE_ALIASES",
    "ChatMessage",
    "ChatRowError",
    "ContentPart",
    "Role",
    "parse_turn",
]

Role = Literal["system", "user", "assistant", "developer", "tool"]
ROLES: tuple[str, ...] = get_args(Role)
# What the chat template sees instead (templates know system, user, assistant, often tool).
ROLE_ALIASES = {"developer": "system"}


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One message; unknown fields (tool_calls, audio, ...) are ignored, as OpenAI clients
    send fields we do not implement."""

    model_config = ConfigDict(extra="ignore")

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _content_unless_assistant(self) -> ChatMessage:
        # Only an assistant turn may be empty (OpenAI's: one that carried tool calls).
        if self.content is None and self.role != "assistant":
            raise PydanticCustomError("missing_content",
                                      "a {role} message needs `content`", {"role": self.role})
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)

    def turn(self) -> dict[str, str]:
        """{role, content} as the chat template takes it: plain text, role aliases applied."""
        return {"role": ROLE_ALIASES.get(self.role, self.role), "content": self.text()}


class ChatRowError(ValueError):
    """A message that does not fit the schema; the text names the field, for a data report."""


def parse_turn(value: object, where: str) -> dict[str, str]:
    """Validate one message (`where` names it, e.g. "messages[2]") and return its turn."""
    if not isinstance(value, dict):
        raise ChatRowError(f"`{where}` is not an object")
    try:
        return ChatMessage.model_validate(value).turn()
    except ValidationError as exc:
        field = exc.errors()[0]["loc"][0]
    if field == "role":
        raise ChatRowError(f"`{where}.role` is {value.get('role')!r}; expected one of "
                           f"{', '.join(ROLES)}")
    if field == "content":
        raise ChatRowError(f"`{where}.content` must be a string or a list of text parts "
                           '({"type": "text", "text": ...})')
    raise ChatRowError(f"`{where}.{field}` is invalid")
