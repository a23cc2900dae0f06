"""Tool calling on the request path, with a fake engine that answers a scripted reply: what
the template renders, the constraint a forced call sends, and what "auto" parsing and its
stream look like to the official client. The real engine and a trained tool-calling adapter
are in test_tools.py."""

from __future__ import annotations

import json

import openai
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI

from training.taskworld import LOOKUP_TOOL, tool_call_text

MESSAGES = [{"role": "user", "content": "lookup: quick fox"}]
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture
def app(inprocess):
    parts = inprocess()
    with TestClient(parts.app) as http:
        yield parts, http, OpenAI(base_url="http://testserver/v1", api_key="unused",
                                  http_client=http, max_retries=0)


def prompt_text(parts) -> str:
    from training.tokenizer import build_tokenizer

    return build_tokenizer().decode(parts.engine.requests[-1][0])


def test_auto_parses_the_reply_into_tool_calls(app):
    parts, http, client = app
    parts.engine.reply = tool_call_text("lookup", {"query": "quick fox"})
    out = client.chat.completions.create(model="loraswap-base", messages=MESSAGES,
                                         tools=[LOOKUP_TOOL, WEATHER])
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "lookup" and call.id
    assert json.loads(call.function.arguments) == {"query": "quick fox"}
    # the template offered both tools, compactly, and the engine ran unconstrained
    assert "tools: lookup(query); weather(city)" in prompt_text(parts)
    assert parts.engine.requests[-1][1].structured is None


def test_auto_with_plain_text_is_a_plain_message(app):
    parts, http, client = app
    parts.engine.reply = "no call here"
    out = client.chat.completions.create(model="loraswap-base", messages=MESSAGES,
                                         tools=[LOOKUP_TOOL])
    assert out.choices[0].message.content == "no call here"
    assert out.choices[0].message.tool_calls is None and out.choices[0].finish_reason == "stop"


def test_auto_stream_deltas_assemble_to_the_call(app):
    parts, http, client = app
    parts.engine.reply = "ok " + tool_call_text("lookup", {"query": "quick fox"})
    chunks = list(client.chat.completions.create(model="loraswap-base", messages=MESSAGES,
                                                 tools=[LOOKUP_TOOL], stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    pieces = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert content == "ok "
    assert pieces[0].id and pieces[0].function.name == "lookup" and pieces[0].type == "function"
    args = "".join(p.function.arguments or "" for p in pieces)
    assert json.loads(args) == {"query": "quick fox"} and {p.index for p in pieces} == {0}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_named_function_is_forced_by_its_argument_schema(app):
    parts, http, client = app
    parts.engine.reply = '{"city": "paris"}'
    out = client.chat.completions.create(
        model="loraswap-base", messages=MESSAGES, tools=[LOOKUP_TOOL, WEATHER],
        tool_choice={"type": "function", "function": {"name": "weather"}})
    assert parts.engine.requests[-1][1].structured == {"json": WEATHER["function"]["parameters"]}
    call = out.choices[0].message.tool_calls[0]
    assert call.function.name == "weather" and json.loads(call.function.arguments) == {"city": "paris"}
    assert out.choices[0].finish_reason == "stop"  # OpenAI's rule for a named function
    chunks = list(client.chat.completions.create(
        model="loraswap-base", messages=MESSAGES, tools=[WEATHER], stream=True,
        tool_choice={"type": "function", "function": {"name": "weather"}}))
    pieces = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert pieces[0].function.name == "weather"
    assert json.loads("".join(p.function.arguments or "" for p in pieces)) == {"city": "paris"}


def test_required_is_an_array_of_named_calls(app):
    parts, http, client = app
    parts.engine.reply = json.dumps([{"name": "weather", "parameters": {"city": "oslo"}},
                                     {"name": "lookup", "parameters": {"query": "fjord"}}])
    out = client.chat.completions.create(model="loraswap-base", messages=MESSAGES,
                                         tools=[LOOKUP_TOOL, WEATHER], tool_choice="required",
                                         parallel_tool_calls=False)
    schema = parts.engine.requests[-1][1].structured["json"]
    assert schema["type"] == "array" and schema["maxItems"] == 1
    assert [c.function.name for c in out.choices[0].message.tool_calls] == ["weather", "lookup"]
    assert out.choices[0].finish_reason == "tool_calls"
    chunks = list(client.chat.completions.create(model="loraswap-base", messages=MESSAGES,
                                                 tools=[LOOKUP_TOOL, WEATHER], stream=True,
                                                 tool_choice="required"))
    pieces = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert [p.index for p in pieces] == [0, 1] and chunks[-1].choices[0].finish_reason == "tool_calls"


def test_history_with_calls_and_tool_replies_renders(app):
    parts, http, client = app
    history = [*MESSAGES,
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "c1", "type": "function",
                    "function": {"name": "lookup", "arguments": '{"query": "quick fox"}'}}]},
               {"role": "tool", "tool_call_id": "c1", "content": "a small animal"}]
    client.chat.completions.create(model="loraswap-base", messages=history, tools=[LOOKUP_TOOL])
    rendered = prompt_text(parts)
    assert rendered.endswith('<|assistant|><tool_call>{"name":"lookup","arguments":'
                             '{"query":"quick fox"}}</tool_call><|end|><|tool|>a small '
                             'animal<|end|><|assistant|>')
    # the template writes a call exactly as the task world's answers are written
    assert tool_call_text("lookup", {"query": "quick fox"}) in rendered


def test_none_offers_tools_but_parses_nothing(app):
    parts, http, client = app
    parts.engine.reply = tool_call_text("lookup", {"query": "x"})
    out = client.chat.completions.create(model="loraswap-base", messages=MESSAGES,
                                         tools=[LOOKUP_TOOL], tool_choice="none")
    assert out.choices[0].message.tool_calls is None
    assert out.choices[0].message.content == parts.engine.reply


@pytest.mark.parametrize(("extra", "param"), [
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [LOOKUP_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ({"tools": [LOOKUP_TOOL, LOOKUP_TOOL]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools"),
    ({"tools": [LOOKUP_TOOL], "tool_choice": "required",
      "response_format": {"type": "json_object"}}, "tool_choice"),
    ({"tools": [LOOKUP_TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ({"functions": [{"name": "f"}]}, "functions"),
])
def test_bad_tool_requests_are_400s_naming_the_field(app, extra, param):
    parts, http, client = app
    r = http.post("/v1/chat/completions", json={"model": "loraswap-base", "messages": MESSAGES,
                                                "max_tokens": 4, **extra})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].split(".")[0].split("[")[0] == param, r.json()


def test_auto_without_a_parser_is_refused(inprocess):
    parts = inprocess(tool_call_parser="")
    with TestClient(parts.app) as http:
        client = OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http,
                        max_retries=0)
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model="loraswap-base", messages=MESSAGES,
                                           tools=[LOOKUP_TOOL])
        assert bad.value.body["param"] == "tool_choice"
        client.chat.completions.create(model="loraswap-base", messages=MESSAGES,
                                       tools=[LOOKUP_TOOL], tool_choice="required")
