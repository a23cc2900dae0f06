"""Hot-swap: a version registered while 16 clients stream from other adapters serves within 1 s,
and none of those streams fails.

On the wide server (max_loras=4): 3 adapters stream, so a slot is free for the new one. With
every slot held by long-running requests, vLLM's scheduler makes a new adapter's request wait
for a slot, whatever the server does: size max_loras above the adapters hot at once.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from openai import AsyncOpenAI

pytestmark = pytest.mark.slow


def test_register_while_streaming(wide_server, adapter_dirs, register_adapters):
    server = wide_server
    registered = register_adapters(server, adapter_dirs[:3])
    new_name = "hot-new"

    async def stream_one(client: AsyncOpenAI, model: str) -> tuple[str, int]:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "copy: keep streaming"}],
            max_tokens=450, temperature=0.7, seed=3, stream=True,
            extra_body={"ignore_eos": True})  # keep every stream in flight for 450 tokens
        finish, n = None, 0
        async for chunk in stream:
            if chunk.choices:
                n += 1
                finish = chunk.choices[0].finish_reason or finish
        return finish, n

    async def scenario() -> tuple[float, list]:
        client = AsyncOpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=300)
        streams = [asyncio.create_task(stream_one(client, registered[i % len(registered)]))
                   for i in range(16)]
        await asyncio.sleep(1.0)  # the streams are running
        assert not any(t.done() for t in streams), "streams finished before the registration"
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            r = await http.post("/admin/adapters", json={"name": new_name,
                                                         "path": str(adapter_dirs[4])})
            assert r.status_code == 201, r.text
        registered_at = time.monotonic()
        first = await client.chat.completions.create(
            model=new_name, messages=[{"role": "user", "content": "copy: hi"}], max_tokens=8,
            temperature=0, stream=True)
        async for chunk in first:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        delay = time.monotonic() - registered_at
        still_running = sum(not t.done() for t in streams)
        assert chunk.model == f"{new_name}@1"
        async for _ in first:
            pass
        results = await asyncio.gather(*streams, return_exceptions=True)
        return delay, results, still_running

    delay, results, still_running = asyncio.run(scenario())
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures
    assert all(finish in ("stop", "length") and n > 1 for finish, n in results), results
    print(f"registration -> first token: {delay * 1000:.0f} ms, {still_running} streams running")
    assert still_running > 0, "the other streams were no longer in flight"
    assert delay < 1.0, f"first token {delay:.2f} s after registration"


def test_upload_over_the_limit_is_413(wide_server):
    r = httpx.post(wide_server.url + "/admin/adapters/upload", params={"name": "big"},
                   content=b"\0" * (2 * 1024 * 1024), timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "upload_too_large"

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(3):
            yield b"\0" * (512 * 1024)

    r = httpx.post(wide_server.url + "/admin/adapters/upload", params={"name": "big"},
                   content=chunks(), timeout=60)
    assert r.status_code == 413
    assert httpx.get(wide_server.url + "/ready").status_code == 200
