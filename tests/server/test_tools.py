"""Tool calling through the official client on the real engine.

Forced calls (`tool_choice="required"` or a named function) are decoded under the tools'
JSON schema, so they hold for any model: the base and a random adapter here. `auto` needs a
model that writes calls: a `lookup` adapter is trained on the task world (its answer is a
call in the hermes format the embedded base's template uses) mixed with `copy` rows offered
the same tool, and is scored on held-out prompts no training step saw.
"""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest
from openai import AsyncOpenAI

from training.taskworld import LOOKUP_TOOL, make_examples

pytestmark = pytest.mark.slow

FORECAST = {"type": "object", "additionalProperties": False, "required": ["city", "days", "unit"],
            "properties": {"city": {"type": "string", "maxLength": 12},
                           "days": {"type": "integer", "minimum": 1, "maximum": 14},
                           "unit": {"enum": ["c", "f"]}}}
CONVERT = {"type": "object", "additionalProperties": False, "required": ["amount"],
           "properties": {"amount": {"type": "integer", "minimum": 0, "maximum": 1000}}}
TOOLS = [{"type": "function", "function": {"name": "forecast", "parameters": FORECAST}},
         {"type": "function", "function": {"name": "convert", "parameters": CONVERT}}]
SCHEMAS = {"forecast": FORECAST, "convert": CONVERT}


async def ask(client: AsyncOpenAI, model: str, prompt: str, stream: bool, **kw):
    """(content, [(name, arguments)], finish_reason) of one reply, streamed or not."""
    args = dict(model=model, max_tokens=120, messages=[{"role": "user", "content": prompt}], **kw)
    if not stream:
        choice = (await client.chat.completions.create(**args)).choices[0]
        calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
        return choice.message.content, calls, choice.finish_reason
    content, names, arguments, finish = "", {}, {}, None
    async for chunk in await client.chat.completions.create(stream=True, **args):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for piece in delta.tool_calls or []:
            if piece.function and piece.function.name:
                names[piece.index] = piece.function.name
            arguments[piece.index] = arguments.get(piece.index, "") + (
                piece.function.arguments or "" if piece.function else "")
        finish = chunk.choices[0].finish_reason or finish
    return content or None, [(names[i], arguments[i]) for i in sorted(names)], finish


def run_all(server, jobs) -> list:
    async def main():
        client = AsyncOpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=180)
        return await asyncio.gather(*(ask(client, *job[:3], **job[3]) for job in jobs))

    return asyncio.run(main())


def test_forced_calls_fit_the_declared_schema_on_all_fifty(server, registered, base_id):
    """25 `required` and 25 named-function requests; base and adapter, streamed and not.
    Bounded schemas, one call per reply: a model untrained for these tools never stops a free
    string, a float's digits or an array of calls by itself (docs/server.md#tool-calling)."""
    jobs = []
    for i in range(50):
        choice = "required" if i < 25 else {"type": "function",
                                            "function": {"name": ("forecast", "convert")[i % 2]}}
        jobs.append(([base_id, registered[1]][i % 2], f"copy: weather {i}", bool(i // 2 % 2),
                     dict(tools=TOOLS, tool_choice=choice, temperature=0.8, seed=i,
                          parallel_tool_calls=False)))
    bad = []
    for job, (content, calls, finish) in zip(jobs, run_all(server, jobs), strict=True):
        choice = job[3]["tool_choice"]
        named = choice["function"]["name"] if isinstance(choice, dict) else None
        ok = bool(calls) and finish == ("stop" if named else "tool_calls")
        for name, arguments in calls:
            try:
                assert named in (None, name)
                jsonschema.validate(json.loads(arguments), SCHEMAS[name])
            except (AssertionError, ValueError, jsonschema.ValidationError):
                ok = False
        if not ok:
            bad.append((job[1], choice, content, calls, finish))
    assert not bad, bad  # 100%


def _arguments(text: str) -> dict:
    """A call's arguments as the client would parse them; {} when they are not a JSON object
    (a miss, counted against the bar, not a crash of the test)."""
    try:
        args = json.loads(text)
    except ValueError:
        return {}
    return args if isinstance(args, dict) else {}


def test_auto_calls_the_tool_on_tool_prompts_and_answers_the_rest(server, lookup):
    tool_prompts = [ex.prompt for ex in make_examples("lookup", "test", 60, seed=1)]
    text_prompts = [ex.prompt for ex in make_examples("copy", "test", 60, seed=1)]
    jobs = [(lookup, p, bool(i % 2), dict(tools=[LOOKUP_TOOL], temperature=0))
            for i, p in enumerate(tool_prompts + text_prompts)]
    out = run_all(server, jobs)
    calls = out[:60]
    parsed = [c for c in calls
              if len(c[1]) == 1 and c[1][0][0] == "lookup" and c[2] == "tool_calls"
              and set(_arguments(c[1][0][1])) == {"query"}]
    exact = [c for c, p in zip(calls, tool_prompts, strict=True) if c in parsed
             and _arguments(c[1][0][1])["query"] == p.removeprefix("lookup: ")]
    plain = [c for c in out[60:] if not c[1] and c[0] and c[2] == "stop"]
    print(f"auto: {len(parsed)}/60 tool prompts called lookup ({len(exact)} with the exact "
          f"query); {len(plain)}/60 copy prompts answered in text")
    assert len(parsed) >= 54, calls[:5]  # >= 90%
    assert len(plain) >= 54, out[60:65]  # >= 90%
    # a streamed and an unstreamed greedy reply are the same call
    same = run_all(server, [(lookup, tool_prompts[0], s, dict(tools=[LOOKUP_TOOL], temperature=0))
                            for s in (False, True)])
    (name, args), (streamed_name, streamed_args) = same[0][1][0], same[1][1][0]
    assert (name, json.loads(args)) == (streamed_name, json.loads(streamed_args))
    assert same[0][2] == same[1][2] == "tool_calls"


def test_a_tool_reply_in_the_history_is_served(server, lookup):
    client = server.client()
    first = client.chat.completions.create(
        model=lookup, max_tokens=120, temperature=0, tools=[LOOKUP_TOOL],
        messages=[{"role": "user", "content": "lookup: quiet river"}])
    call = first.choices[0].message.tool_calls[0]
    second = client.chat.completions.create(
        model=lookup, max_tokens=40, temperature=0, tools=[LOOKUP_TOOL], messages=[
            {"role": "user", "content": "lookup: quiet river"},
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "a calm stream"}])
    assert second.choices[0].finish_reason in ("stop", "tool_calls", "length")
    assert second.usage.prompt_tokens > first.usage.prompt_tokens
