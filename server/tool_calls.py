"""Tool calling without a parser: the JSON schema that forces a call, and reading it back.

Why constrain instead of parse: with `tool_choice="required"` or a named function the client
was promised a call whose arguments fit the declared schema. Decoding under that schema
(vLLM's structured outputs) guarantees it for any model, trained for tools or not; only
`tool_choice="auto"` needs the model's own call format and a parser (server/engine_tools.py).
The shapes follow vLLM's: a named function's output is its arguments object; "required"
produces a JSON array of {"name", "parameters"} objects.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = ["ForcedCallStream", "ParsedCall", "call_id", "forced_schema", "parse_forced"]

EMPTY_OBJECT = {"type": "object", "properties": {}}


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: str  # JSON text, as OpenAI returns it
    id: str = ""


def forced_schema(tools: list[dict[str, Any]], choice: str | None,
                  parallel: bool | None) -> dict[str, Any]:
    """`choice`: a function name, or None for "required" (any of `tools`, one or more)."""
    params = {t["name"]: t.get("parameters") or EMPTY_OBJECT for t in tools}
    if choice is not None:
        return params[choice]
    schema: dict[str, Any] = {
        "type": "array", "minItems": 1,
        "items": {"anyOf": [
            {"type": "object", "additionalProperties": False,
             "required": ["name", "parameters"],
             "properties": {"name": {"type": "string", "enum": [name]}, "parameters": p}}
            for name, p in params.items()]}}
    if parallel is False:
        schema["maxItems"] = 1
    return schema


def parse_forced(text: str, choice: str | None) -> list[ParsedCall] | None:
    """The calls in a forced reply, or None when it is not complete JSON (cut by max_tokens)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if choice is not None:
        return [ParsedCall(choice, json.dumps(value, ensure_ascii=False), call_id())]
    if not isinstance(value, list):
        return None
    return [ParsedCall(item["name"], json.dumps(item["parameters"], ensure_ascii=False),
                       call_id()) for item in value]


class ForcedCallStream:
    """Streamed deltas of a forced call, shaped as OpenAI's: a named function's first delta
    carries id and name, later ones pieces of `arguments`; "required" output is an array whose
    item boundaries are only certain once it is complete, so its calls come at the end."""

    def __init__(self, choice: str | None) -> None:
        self.choice = choice
        self.text = ""
        self.started = False

    def feed(self, delta: str) -> list[dict[str, Any]]:
        self.text += delta
        if self.choice is None:
            return []
        out = []
        if not self.started:
            self.started = True
            out.append({"index": 0, "id": call_id(), "type": "function",
                        "function": {"name": self.choice, "arguments": ""}})
        if delta:
            out.append({"index": 0, "function": {"arguments": delta}})
        return out

    def finish(self) -> list[dict[str, Any]]:
        if self.choice is not None:
            return []
        calls = parse_forced(self.text, None) or []
        return [{"index": i, "id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for i, c in enumerate(calls)]
