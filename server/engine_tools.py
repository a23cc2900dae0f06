"""vLLM's tool-call parsers (`tool_choice="auto"`) behind our own small interface.

Why wrap rather than reimplement: every model family writes calls its own way (Hermes'
`<tool_call>` tags, Llama's bare JSON, Mistral's `[TOOL_CALLS]`, ...), and vLLM keeps one
parser per format. We pick one by name (the `tool_call_parser` setting) and hand serving code
plain dicts, so nothing outside this module and server/engine.py touches vLLM's classes.
A parser holds streaming state: make one per choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.tool_calls import ParsedCall, call_id

__all__ = ["AutoToolParser", "StreamDelta", "known_parsers"]


def known_parsers() -> list[str]:
    from vllm.tool_parsers import ToolParserManager

    return sorted(ToolParserManager.list_registered())


@dataclass
class StreamDelta:
    content: str | None
    tool_calls: list[dict[str, Any]]  # OpenAI's delta shape: index, id?, type?, function


class AutoToolParser:
    def __init__(self, name: str, tokenizer, tools: list[dict[str, Any]]) -> None:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.tool_parsers import ToolParserManager

        self._request = ChatCompletionRequest(
            model="loraswap", messages=[{"role": "user", "content": ""}], tools=tools,
            tool_choice="auto")
        self._parser = ToolParserManager.get_tool_parser(name)(tokenizer, self._request.tools)
        self._request = self._parser.adjust_request(self._request)
        self._text = ""
        self._ids: list[int] = []

    @property
    def keeps_special_tokens(self) -> bool:
        """Some formats mark their call tags as special tokens; the detokenizer must keep them."""
        return self._request.skip_special_tokens is False

    def parse(self, text: str) -> tuple[str | None, list[ParsedCall]]:
        """(content, calls) of a finished reply; no calls when the format is not there."""
        info = self._parser.extract_tool_calls(text, self._request)
        if not info.tools_called:
            return text, []
        return info.content, [ParsedCall(c.function.name, c.function.arguments,
                                         c.id or call_id()) for c in info.tool_calls]

    def feed(self, delta_text: str, delta_ids: list[int]) -> StreamDelta | None:
        """The client-visible part of the next piece of a streamed reply."""
        previous, previous_ids = self._text, self._ids
        self._text, self._ids = previous + delta_text, previous_ids + list(delta_ids)
        delta = self._parser.extract_tool_calls_streaming(
            previous, self._text, delta_text, previous_ids, self._ids, list(delta_ids),
            self._request)
        if delta is None:
            return None
        calls = [c.model_dump(exclude_none=True) for c in delta.tool_calls]
        return StreamDelta(delta.content, calls)

    def unstreamed_arguments(self) -> tuple[int, str]:
        """(index, text) of arguments the parser had parsed but not yet sent for the last
        call when the reply ended (vLLM's parsers hold back what might still change)."""
        return len(self._parser.prev_tool_call_arr) - 1, self._parser.get_remaining_unstreamed_args()

    @property
    def called(self) -> bool:
        return bool(self._parser.prev_tool_call_arr)
