"""SIGTERM while 16 requests are in flight: all of them complete, and the process exits 0."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest
from openai import AsyncOpenAI

pytestmark = pytest.mark.slow


def test_sigterm_drains_in_flight(wide_server):
    server = wide_server
    try:
        async def scenario():
            client = AsyncOpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120)

            async def one(i: int, stream: bool):
                kw = dict(model="loraswap-base", max_tokens=150, temperature=0.8, seed=i,
                          messages=[{"role": "user", "content": f"copy: request {i}"}],
                          extra_body={"min_tokens": 150})
                if not stream:
                    r = await client.chat.completions.create(**kw)
                    return r.choices[0].finish_reason, r.usage.completion_tokens
                n, finish = 0, None
                async for c in await client.chat.completions.create(**kw, stream=True):
                    if c.choices:
                        n += 1
                        finish = c.choices[0].finish_reason or finish
                return finish, n

            tasks = [asyncio.create_task(one(i, stream=i % 2 == 0)) for i in range(16)]
            async with httpx.AsyncClient(base_url=server.url) as http:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    text = (await http.get("/metrics")).text
                    if "loraswap_requests_in_flight 16.0" in text:
                        break
                    await asyncio.sleep(0.05)
            assert not any(t.done() for t in tasks)
            assert "loraswap_requests_in_flight 16.0" in text
            server.proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*tasks, return_exceptions=True)

        results = asyncio.run(scenario())
        started = time.monotonic()
        code = server.proc.wait(90)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures
        assert all(f == "length" and n >= 2 for f, n in results), results
        assert [n for f, n in results][1::2] == [150] * 8  # non-streamed: all 150 tokens
        assert code == 0, server.log_text()[-2000:]
        assert time.monotonic() - started < 60
        assert "draining in-flight requests" in server.log_text()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
