"""What a chat choice becomes under each `tool_choice`: a message, stream deltas, a finish.

Why one object per choice: "auto" parsing keeps streaming state per reply (vLLM's parsers
diff the text seen so far), and the finish reason depends on what was found. OpenAI's rules,
which vLLM's server follows too: `finish_reason` is "tool_calls" when "auto" or "required"
produced calls and the reply ended by itself, and stays "stop" for a named function.
"""

from __future__ import annotations

from server.errors import InvalidRequest
from server.openai_requests import ChatCompletionRequest
from server.protocol import AssistantMessage, Delta, DeltaToolCall, FunctionCall, ToolCall
from server.tool_calls import ForcedCallStream, ParsedCall, parse_forced

__all__ = ["ChoiceTools", "ToolPolicy"]


class ToolPolicy:
    """One request's tool handling; `choice()` gives each choice its own state."""

    def __init__(self, req: ChatCompletionRequest, parser_name: str, tokenizer) -> None:
        self.mode = req.tool_mode()
        self.name = req.forced_name()
        self.tools = req.tool_dicts()
        self.parser_name = parser_name
        self.tokenizer = tokenizer
        if self.mode == "auto" and not parser_name:
            raise InvalidRequest(
                "tool_choice 'auto' needs a tool-call parser, and this server has none "
                "(the tool_call_parser setting is empty); use 'required' or a named function",
                param="tool_choice", code="unsupported_parameter")
        # The first choice's state, built now: a parser that refuses the tools fails the
        # request before any stream starts, and it says whether special tokens must stay.
        self._first: ChoiceTools | None = ChoiceTools(self)
        self.keeps_special_tokens = self._first.keeps_special_tokens

    def choice(self) -> ChoiceTools:
        first, self._first = self._first, None
        return first if first is not None else ChoiceTools(self)


class ChoiceTools:
    def __init__(self, policy: ToolPolicy) -> None:
        self.mode = policy.mode
        self.name = policy.name
        self.parser = None
        self.forced = None
        if self.mode == "auto":
            from server.engine_tools import AutoToolParser  # vLLM: only when tools are used

            try:
                self.parser = AutoToolParser(policy.parser_name, policy.tokenizer,
                                             policy.tools or [])
            except ValueError as exc:  # pydantic's too: vLLM's own model of the tools refused
                raise InvalidRequest(f"the tool-call parser refused these tools: {exc}",
                                     param="tools") from None
        elif self.mode in ("required", "named"):
            self.forced = ForcedCallStream(self.name)
        self.called = False
        self.text = ""

    @property
    def keeps_special_tokens(self) -> bool:
        return self.parser is not None and self.parser.keeps_special_tokens

    def _finish(self, reason: str | None) -> str | None:
        if self.called and reason == "stop" and self.mode in ("auto", "required"):
            return "tool_calls"
        return reason

    # -- a whole reply ----------------------------------------------------------------------

    def message(self, text: str, reason: str | None) -> tuple[AssistantMessage, str | None]:
        calls: list[ParsedCall] = []
        content: str | None = text
        if self.parser is not None:
            content, calls = self.parser.parse(text)
        elif self.mode in ("required", "named"):
            calls = parse_forced(text, self.name) or []
            if calls:
                content = None
        self.called = bool(calls)
        tool_calls = [ToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments))
                      for c in calls] or None
        return AssistantMessage(content=content or (None if calls else ""),
                                tool_calls=tool_calls), self._finish(reason)

    # -- a streamed reply -------------------------------------------------------------------

    def delta(self, text: str, token_ids: list[int]) -> Delta | None:
        """The client's delta for this piece, or None when there is nothing to send yet."""
        self.text += text
        if self.parser is not None:
            got = self.parser.feed(text, token_ids)
            if got is None:
                return None
            self.called = self.called or bool(got.tool_calls)
            return _delta(got.content, got.tool_calls)
        if self.forced is not None:
            calls = self.forced.feed(text)
            self.called = self.called or bool(calls)
            return _delta(None, calls)
        return Delta(content=text) if text else None

    def end(self, reason: str | None) -> tuple[Delta | None, str | None]:
        """The last delta (calls that could only be known at the end) and the finish reason."""
        last = None
        if self.forced is not None:
            calls = self.forced.finish()
            if calls:
                self.called = True
                last = _delta(None, calls)
            elif self.name is None and self.forced.text:  # not a complete array: show the text
                last = Delta(content=self.forced.text)
        elif self.parser is not None and self.parser.called:
            index, rest = self.parser.unstreamed_arguments()
            if rest:
                last = _delta(None, [{"index": index, "function": {"arguments": rest}}])
        return last, self._finish(reason)


def _delta(content: str | None, calls: list[dict]) -> Delta | None:
    if not content and not calls:
        return None
    return Delta(content=content or None,
                 tool_calls=[DeltaToolCall.model_validate(c) for c in calls] or None)
