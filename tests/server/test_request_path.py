"""The request path reads memory: an inference request runs no SQL and no file `stat` on the
event loop (keys, experiment routing, the model catalog and residency are all in memory)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections import Counter

import httpx
from openai import AsyncOpenAI


def test_an_inference_request_runs_no_sql_and_no_stat_on_the_event_loop(
        monkeypatch, inprocess, tiny_loras):
    seen: Counter[str] = Counter()
    loop_thread: list[int] = []
    real_connect, real_stat = sqlite3.connect, os.stat

    def on_loop() -> bool:
        return bool(loop_thread) and threading.get_ident() == loop_thread[0]

    def connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        conn.set_trace_callback(lambda sql: seen.update(["sql on loop"] if on_loop() else
                                                        ["sql elsewhere"]))
        return conn

    def stat(path, *args, **kwargs):
        if on_loop():
            seen["stat on loop"] += 1
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)
    parts = inprocess(log_all=True)
    _, key = parts.keys.create("app", "admin")
    auth = {"Authorization": f"Bearer {key}"}

    async def main() -> dict[str, Counter]:
        loop_thread.append(threading.get_ident())
        async with parts.app.router.lifespan_context(parts.app):
            transport = httpx.ASGITransport(app=parts.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app",
                                         headers=auth) as http:
                for i, name in enumerate(("a", "b")):
                    r = await http.post("/admin/adapters", json={"name": name,
                                                                  "path": str(tiny_loras[i])})
                    assert r.status_code == 201
                r = await http.post("/admin/experiments", json={
                    "alias": "bot", "variants": [{"ref": "a@1", "weight": 1},
                                                 {"ref": "b@1", "weight": 1}]})
                assert r.status_code == 201
                assert (await http.post("/admin/experiments/bot/start")).status_code == 200
                client = AsyncOpenAI(base_url="http://app/v1", api_key=key, http_client=http,
                                     max_retries=0)
                # FastAPI reads each endpoint's source location once per process (its
                # error context cache): warm the route up before counting.
                await client.chat.completions.create(
                    model="loraswap-base", max_tokens=1, messages=[{"role": "user",
                                                                    "content": "warm"}])
                counts = {}
                for label, model in (("cold", "a"), ("warm", "a@1"), ("alias", "bot"),
                                     ("base", "loraswap-base")):
                    seen.clear()
                    monkeypatch.setattr(os, "stat", stat)
                    out = await client.chat.completions.create(
                        model=model, user="u1", max_tokens=8,
                        messages=[{"role": "user", "content": "hi"}])
                    monkeypatch.setattr(os, "stat", real_stat)
                    assert out.choices[0].message.content.startswith("[")
                    counts[label] = Counter(seen)
                parts.router.flush()  # the log was written, on the writer's thread
        return counts

    counts = asyncio.run(main())
    for label, c in counts.items():
        assert c["sql on loop"] == 0, (label, c)
        assert c["stat on loop"] == 0, (label, c)
    rows = sqlite3.connect(parts.config.db_path).execute(
        "SELECT alias, model_served FROM requests ORDER BY ts").fetchall()
    assert [r[0] for r in rows] == ["loraswap-base", "a", "a@1", "bot", "loraswap-base"]


def test_a_name_another_process_just_registered_is_served_at_once(inprocess, tiny_loras):
    """Another ingress replica (or the CLI) registered a version and made an alias: the next
    request here serves both, without waiting for the reconcile loop (an hour here). Names
    nobody registered still 404, and a burst of them re-reads the database a few times."""
    from loraswap.wiring import open_registry, open_router

    parts = inprocess(reconcile_interval=3600)
    settings = parts.extra["settings"]

    async def main():
        async with parts.app.router.lifespan_context(parts.app):
            transport = httpx.ASGITransport(app=parts.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                client = AsyncOpenAI(base_url="http://app/v1", api_key="unused",
                                     http_client=http, max_retries=0)

                async def ask(model: str):
                    return await client.chat.completions.with_raw_response.create(
                        model=model, max_tokens=2, messages=[{"role": "user", "content": "hi"}])

                with open_registry(settings) as elsewhere:
                    elsewhere.add(tiny_loras[0], "late")
                    other = open_router(settings, elsewhere)
                    try:
                        other.set_alias("late-alias", "late@1")
                    finally:
                        other.close()
                served = [(await ask(m)).headers["X-Loraswap-Model"] for m in ("late", "late-alias")]
                models = parts.app.state.models
                before = models.miss_reread.count
                unknown = await asyncio.gather(*(http.post("/v1/chat/completions", json={
                    "model": f"nobody-{i}", "messages": [{"role": "user", "content": "hi"}]})
                    for i in range(40)))
                return served, [r.status_code for r in unknown], models.miss_reread.count - before

    served, statuses, rereads = asyncio.run(main())
    assert served == ["late@1", "late@1"]
    assert set(statuses) == {404}
    assert 1 <= rereads <= 5, rereads


def test_a_key_another_process_just_created_works_at_once(inprocess):
    """Another ingress replica (or the CLI) created a key: its first request here is served,
    not refused for the reconcile interval (an hour here); wrong keys still get a 401."""
    from loraswap.wiring import open_keys

    parts = inprocess(reconcile_interval=3600)
    parts.keys.create("ops", "admin")  # keys are on

    async def main():
        async with parts.app.router.lifespan_context(parts.app):
            transport = httpx.ASGITransport(app=parts.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
                elsewhere = open_keys(parts.extra["settings"])
                try:
                    _, fresh = elsewhere.create("app", "inference")
                finally:
                    elsewhere.close()
                ok = await http.get("/v1/models", headers={"Authorization": f"Bearer {fresh}"})
                wrong = await asyncio.gather(*(http.get("/v1/models", headers={
                    "Authorization": f"Bearer sk-wrong-{i}"}) for i in range(20)))
                return ok.status_code, {r.status_code for r in wrong}

    assert asyncio.run(main()) == (200, {401})
    assert 1 <= parts.keys.miss_reread.count <= 4
