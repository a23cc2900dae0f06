"""The one chat schema: what the server accepts is what training learns from."""

from __future__ import annotations

import pytest

from common.chat import ROLES, ChatMessage, ChatRowError, parse_turn


def test_roles_and_content_shapes() -> None:
    assert set(ROLES) == {"system", "user", "assistant", "developer", "tool"}
    parts = ChatMessage.model_validate(
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
         "tool_calls": []})
    assert parts.text() == "ab"
    assert ChatMessage(role="assistant").text() == ""


def test_turns_are_what_the_template_sees() -> None:
    assert parse_turn({"role": "developer", "content": "be brief"}, "m[0]") == {
        "role": "system", "content": "be brief"}
    assert parse_turn({"role": "tool", "content": "42", "tool_call_id": "c1"}, "m[1]") == {
        "role": "tool", "content": "42", "tool_call_id": "c1"}


def test_tool_calls_reach_the_template_with_object_arguments() -> None:
    turn = parse_turn({"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "lookup", "arguments": '{"query": "fox"}'}}]}, "m[1]")
    assert turn == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "lookup", "arguments": {"query": "fox"}}}]}
    # a turn read back (the request log's export) is the same turn
    assert parse_turn(turn, "m[1]") == turn


@pytest.mark.parametrize(("value", "message"), [
    ({"role": "robot", "content": "x"}, "`m[3].role` is 'robot'; expected one of system"),
    ({"content": "x"}, "`m[3].role` is None"),
    ({"role": "user", "content": 5}, "`m[3].content` must be a string or a list of text parts"),
    ({"role": "user", "content": [{"type": "image_url"}]}, "`m[3].content` must be"),
    (["user", "x"], "`m[3]` is not an object"),
    ({"role": "user", "content": "x", "tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "{}"}}]},
     "`m[3]`: only an assistant message may carry `tool_calls`"),
    ({"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]},
     "`m[3].tool_calls.0.function.arguments` is invalid"),
    ({"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f g", "arguments": "{}"}}]},
     "`m[3].tool_calls.0.function.name` is invalid"),
])
def test_refusals_name_the_field(value: object, message: str) -> None:
    with pytest.raises(ChatRowError) as err:
        parse_turn(value, "m[3]")
    assert str(err.value).startswith(message)
