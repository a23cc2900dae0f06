"""`loraswap serve --replicas 2 --ingress-replicas 2 --ray-address auto`: the server on a
Ray cluster it did not start, with two engine replicas behind two ingress replicas.

One scaled-out server for the module (two engines start in about a minute on two cores),
driven like the single-process one: the official `openai` client over loopback, the admin
API, and the SQLite database the control plane writes. The cluster is started the way
docs/scaling.md tells an operator to (`ray start --head` with the control-plane resource
and the proxy callback in its environment); the last test stops the server and finds the
cluster still running without it. A Ray that `loraswap serve` starts itself (no
`--ray-address`) is what the benchmark smoke run uses (tests/benchmarks/test_quick.py).

The cluster uses Ray's token authentication with a token of its own in the environment, so
the tests mean the same whether or not this machine has a `~/.ray/auth_token` (which a local
`ray.init()` writes, and which silently turns token auth on for a later `ray start`).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
from openai import AsyncOpenAI

from loraswap.launcher import start_serve
from loraswap.scale_out import CONTROL_PLANE, PROXY_CALLBACK, PROXY_CALLBACK_ENV
from training.hf_generate import HFChatModel

pytestmark = pytest.mark.slow

PROMPTS = ["copy: the cat sat", "upper: hello there", "reverse: one two three"]
MAX_TOKENS = 16
EOS = 2
RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def ray_cluster():
    """The environment every process that talks to the cluster needs."""
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {**os.environ, **auth, PROXY_CALLBACK_ENV: PROXY_CALLBACK, "RAY_worker_niceness": "0"}
    subprocess.run([RAY, "start", "--head", "--num-cpus", "2", "--resources",
                    json.dumps({CONTROL_PLANE: 1}), "--include-dashboard=false",
                    "--disable-usage-stats"], env=env, check=True, timeout=180,
                   capture_output=True)
    yield auth
    subprocess.run([RAY, "stop", "--force"], env=env, timeout=180, capture_output=True)


@pytest.fixture(scope="module")
def cluster(ray_cluster, embedded_base: Path, tmp_path_factory: pytest.TempPathFactory):
    # max_loras left to auto (server/lora_slots.py): max_cpu_loras bounds it here.
    env = {**ray_cluster, "LORASWAP_MAX_LORA_RANK": "8", "LORASWAP_MAX_CPU_LORAS": "8",
           "LORASWAP_KV_CACHE_GIB": "1", "LORASWAP_LOG_ALL_REQUESTS": "1",
           "LORASWAP_MAX_MODEL_LEN": "256",
           # Ray reserves CPUs per replica: half a core each, so a new or replacement replica
           # never waits for a stopping one to hand back its share of the cluster's 2 CPUs
           # (each engine still binds one thread).
           "LORASWAP_REPLICA_CPUS": "0.5"}
    s = start_serve(tmp_path_factory.mktemp("cluster"), embedded_base, "--base-model-name",
                    "loraswap-base", "--replicas", "2", "--ingress-replicas", "2",
                    "--ray-address", "auto", env=env, timeout=420, own_group=True)
    yield s
    s.stop(timeout=90)


@pytest.fixture(scope="module")
def names(cluster, adapter_dirs, register_adapters) -> list[str]:
    return register_adapters(cluster, adapter_dirs, prefix="s")


def replicas(cluster) -> list[dict]:
    r = httpx.get(cluster.url + "/admin/engine", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["replicas"]


async def _chat(client: AsyncOpenAI, model: str, prompt: str, max_tokens: int = MAX_TOKENS,
                **kw):
    return await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], temperature=0,
        max_tokens=max_tokens, extra_body={"return_token_ids": True}, **kw)


def _ids(raw) -> list[int]:
    ids = list(raw.parse().choices[0].token_ids)
    return ids[:-1] if ids and ids[-1] == EOS else ids


def test_two_replicas_serve_the_base_and_five_adapters_as_transformers_does(
        cluster, names, adapter_dirs, embedded_base):
    refs = {"loraswap-base": HFChatModel.load(embedded_base).generate_ids(PROMPTS, MAX_TOKENS)}
    for name, path in zip(names, adapter_dirs, strict=True):
        refs[name] = HFChatModel.load(embedded_base, path).generate_ids(PROMPTS, MAX_TOKENS)
    assert len({tuple(map(tuple, v)) for v in refs.values()}) == len(refs)
    jobs = [(m, i) for _ in range(2) for m in refs for i in range(len(PROMPTS))]

    async def run():
        client = AsyncOpenAI(base_url=cluster.v1, api_key="unused", max_retries=0, timeout=300)
        return await asyncio.gather(*(_chat(client, m, PROMPTS[i]) for m, i in jobs))

    results = asyncio.run(run())
    wrong = [(m, i) for (m, i), raw in zip(jobs, results, strict=True) if _ids(raw) != refs[m][i]]
    assert not wrong, f"{len(wrong)} of {len(jobs)} differ: {wrong[:6]}"
    # One request id per response, the server's own (Ray's proxy adds one of its own).
    assert all([h[:4] for h in raw.headers.get_list("x-request-id")] == ["req_"]
               for raw in results)
    view = replicas(cluster)
    assert len(view) == 2 and len({r["pid"] for r in view}) == 2
    assert all(r["running"] for r in view)
    assert {ref for r in view for ref in r["loaded"]} == {f"{n}@1" for n in names}
    # Six models at once on each replica: auto gave every cached adapter a slot.
    engine = httpx.get(cluster.url + "/admin/engine", timeout=30).json()
    assert (engine["max_loras"], engine["max_loras_reason"]) == (
        8, "auto, bounded by max_cpu_loras")


def test_requests_go_to_a_replica_that_holds_their_adapter(cluster, names):
    """After the first loads, requests for the same five adapters load nothing anywhere."""

    async def warm_then_count():
        client = AsyncOpenAI(base_url=cluster.v1, api_key="unused", max_retries=0, timeout=300)
        for name in names:
            await _chat(client, name, PROMPTS[0])
        await asyncio.sleep(1.0)  # replicas report what they hold every 0.1 s
        before = sum(r["adapter_loads"] for r in replicas(cluster))
        for _ in range(4):
            await asyncio.gather(*(_chat(client, n, p) for n in names for p in PROMPTS[:2]))
        await asyncio.sleep(1.0)
        return before, sum(r["adapter_loads"] for r in replicas(cluster))

    before, after = asyncio.run(warm_then_count())
    assert after == before, f"{after - before} loads for adapters some replica already held"
    metrics = httpx.get(cluster.url + "/metrics", timeout=30).text
    assert 'loraswap_replica_adapter_loaded{adapter="s0@1"' in metrics
    assert metrics.count("loraswap_ingress_leader{") == 2  # each ingress, from either


def test_a_version_registered_under_traffic_is_served_within_a_second(cluster, adapter_dirs,
                                                                      names):
    """Served = its first token reaches the client: from there on the answer decodes at the
    pace of any other request on a busy replica, which is not what a hot-swap adds."""

    async def run():
        client = AsyncOpenAI(base_url=cluster.v1, api_key="unused", max_retries=0, timeout=300)
        stop = asyncio.Event()

        async def traffic():
            while not stop.is_set():
                await asyncio.gather(*(_chat(client, n, PROMPTS[0]) for n in names[:3]))

        background = asyncio.create_task(traffic())
        await asyncio.sleep(1.0)
        async with httpx.AsyncClient(base_url=cluster.url, timeout=60) as admin:
            r = await admin.post("/admin/adapters", json={"name": "fresh",
                                                          "path": str(adapter_dirs[4])})
            assert r.status_code == 201, r.text
            registered = time.monotonic()
            async with client.chat.completions.with_streaming_response.create(
                    model="fresh", messages=[{"role": "user", "content": PROMPTS[0]}],
                    temperature=0, max_tokens=MAX_TOKENS, stream=True) as response:
                text, first = "", None
                async for chunk in await response.parse():
                    if chunk.choices and chunk.choices[0].delta.content:
                        first = first or time.monotonic() - registered
                        text += chunk.choices[0].delta.content
                done = time.monotonic() - registered
        stop.set()
        await background
        return response.headers, text, first, done

    headers, text, first, done = asyncio.run(run())
    assert headers["X-Loraswap-Model"] == "fresh@1"
    assert text and first is not None
    print(f"\nregistered under traffic: first token {first * 1000:.0f} ms later, "
          f"whole answer {done * 1000:.0f} ms")
    assert first < 1.0


def _ingresses(cluster) -> list[dict]:
    r = httpx.get(cluster.url + "/admin/engine", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["ingresses"]


def test_a_user_keeps_their_variant_whichever_replica_serves_them(cluster, names):
    """A bandit experiment keeps each user on their first variant even after its weights
    change: with two ingress replicas, the one that did not serve a user's first request
    knows it from the log. Users' later requests go through both ingresses."""
    admin = httpx.Client(base_url=cluster.url, timeout=60)
    r = admin.post("/admin/experiments", json={
        "alias": "sticky", "mode": "bandit", "bandit_interval_s": 3600, "variants": [
            {"ref": "base", "weight": 1}, {"ref": f"{names[0]}@1", "weight": 1}]})
    assert r.status_code == 201, r.text
    assert admin.post("/admin/experiments/sticky/start").status_code == 200
    users = [f"user{u}" for u in range(24)]
    before = {i["ingress"]: i["requests"] for i in _ingresses(cluster)}

    async def wave(client: AsyncOpenAI, repeat: int) -> list[tuple[str, str]]:
        jobs = [u for u in users for _ in range(repeat)]
        raws = await asyncio.gather(*(_chat(client, "sticky", PROMPTS[0], max_tokens=4, user=u)
                                      for u in jobs))
        return [(u, raw.headers["X-Loraswap-Variant"]) for u, raw in zip(jobs, raws, strict=True)]

    async def run():
        client = AsyncOpenAI(base_url=cluster.v1, api_key="unused", max_retries=0, timeout=300)
        first = dict(await wave(client, 1))
        await asyncio.sleep(2.0)  # logged, and read back by every ingress
        r = admin.put("/admin/experiments/sticky/weights", json={"variants": [
            {"ref": "base", "weight": 1}, {"ref": f"{names[0]}@1", "weight": 0}]})
        assert r.status_code == 200, r.text  # every new user to the base from here
        await asyncio.sleep(1.0)
        return first, await wave(client, 4)

    first, later = asyncio.run(run())
    assert len(set(first.values())) == 2  # both variants have users: some would move
    moved = sorted({u for u, variant in later if variant != first[u]})
    assert not moved, f"{len(moved)} users changed variant: {moved[:5]}"
    # Every ingress served some of it, and exactly one of them leads.
    after = _ingresses(cluster)
    assert len(after) == 2 and sum(i["leader"] for i in after) == 1
    assert all(i["requests"] > before.get(i["ingress"], 0) for i in after), (before, after)


def _wait_for_replicas(cluster, n: int, timeout: float = 300) -> list[dict]:
    """A new engine starts in about 50 s on an idle two-core machine; under traffic that
    keeps the other engines busy it took up to 150 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = replicas(cluster)
        if len(view) == n and all(r["running"] for r in view):
            return view
        time.sleep(1.0)
    raise AssertionError(f"not {n} replicas after {timeout} s: {view}")


def test_scaling_up_and_down_under_traffic_loses_no_request(cluster, names):
    """`loraswap scale 1`, then `loraswap scale 2`, while clients keep asking."""
    from click.testing import CliRunner

    from loraswap.cli import cli

    before = {r["pid"] for r in replicas(cluster)}

    async def run():
        client = AsyncOpenAI(base_url=cluster.v1, api_key="unused", max_retries=0, timeout=120)
        stop = asyncio.Event()
        statuses: list[int] = []
        took: dict[int, float] = {}

        # Six clients that never pause while a replica leaves, so it has requests to finish;
        # two that pause while the new one starts. Its start is mostly CPU (three processes
        # importing torch and vLLM) and on two cores takes far longer behind engines
        # that are never idle, which tests nothing more: the new replica joins at its end.
        heavy = asyncio.Event()
        heavy.set()

        async def user(i: int):
            while not stop.is_set():
                if i >= 2 and not heavy.is_set():
                    await asyncio.sleep(0.1)
                    continue
                try:
                    await _chat(client, names[i % 5] if i % 2 else "loraswap-base", PROMPTS[0])
                    statuses.append(200)
                except Exception as exc:
                    statuses.append(getattr(exc, "status_code", -1))
                if not heavy.is_set():
                    await asyncio.sleep(0.5)

        async def operator():
            for n in (1, 2):
                asked = time.monotonic()
                if n == 2:
                    heavy.clear()
                out = await asyncio.to_thread(CliRunner().invoke, cli,
                                              ["scale", str(n), "--url", cluster.url])
                assert out.exit_code == 0, out.output
                assert f"scaling to {n} engine replica{'s' if n > 1 else ''} (" in out.output
                view = await asyncio.to_thread(_wait_for_replicas, cluster, n)
                took[n] = time.monotonic() - asked
                heavy.set()
                await asyncio.sleep(2.0)  # traffic on the new set
            stop.set()
            return view

        users = [asyncio.create_task(user(i)) for i in range(6)]
        view = await operator()
        await asyncio.gather(*users)
        return statuses, view, took

    statuses, view, took = asyncio.run(run())
    print(f"\nscaled 2 -> 1 -> 2 under traffic ({took[1]:.0f} s down to one, "
          f"{took[2]:.0f} s to a second replica serving): {len(statuses)} requests, "
          f"{statuses.count(200)} answered")
    assert statuses and set(statuses) == {200}
    # Scaling up kept the running replica: one of the first two is still there.
    assert len(before & {r["pid"] for r in view}) == 1
    status = CliRunner().invoke(cli, ["status", "--url", cluster.url])
    assert status.exit_code == 0 and "2 engine replicas (Ray Serve)" in status.output
    assert all(str(r["pid"]) in status.output for r in view)


def test_killing_a_replica_loses_no_acknowledged_request_or_feedback(cluster, names):
    """SIGKILL one engine replica's process while requests and feedback posts are in flight."""
    home = cluster.home
    victim = replicas(cluster)[0]
    n_requests, n_feedback = 500, 2000

    async def run():
        # The load generator must not be what is slow: httpx's connection pool does work in
        # proportion to the requests waiting in it at every step, so 2,000 posts queued on
        # one client cost that client about two minutes of CPU on this machine (measured),
        # the same two cores the server has. Posts therefore wait for a connection here,
        # 64 at a time as before, and the chat requests are spread over several clients.
        clients = [AsyncOpenAI(base_url=cluster.v1, api_key="unused", max_retries=0,
                               timeout=120) for _ in range(5)]
        seed = await asyncio.gather(*(_chat(clients[0], names[i % 5], PROMPTS[0])
                                      for i in range(20)))
        seed_ids = [raw.headers["X-Request-Id"] for raw in seed]
        await asyncio.sleep(1.5)  # logged before feedback names them

        async def request(i: int):
            started = time.monotonic()
            model = "loraswap-base" if i % 3 == 0 else names[i % 5]
            try:
                # Short answers: the point is the fault, and 500 requests at once on two
                # cores queue long enough as it is while the replacement engine starts.
                raw = await _chat(clients[i % len(clients)], model, PROMPTS[i % 3],
                                  stream=False, max_tokens=4)
                return 200, raw.headers["X-Request-Id"], time.monotonic() - started
            except Exception as exc:  # openai.APIStatusError carries the status
                return getattr(exc, "status_code", -1), None, time.monotonic() - started

        connections = asyncio.Semaphore(64)

        async def feedback(http: httpx.AsyncClient, i: int):
            cid = f"fb-{uuid.uuid4().hex}"
            async with connections:
                r = await http.post("/v1/feedback", json={
                    "request_id": seed_ids[i % len(seed_ids)], "thumb": "up" if i % 2 else "down",
                    "client_id": cid})
            return r.status_code, cid

        async def kill_soon():
            await asyncio.sleep(1.0)
            os.kill(victim["pid"], signal.SIGKILL)

        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=cluster.url, timeout=120, limits=limits) as http:
            out = await asyncio.gather(kill_soon(),
                                       asyncio.gather(*(request(i) for i in range(n_requests))),
                                       asyncio.gather(*(feedback(http, i) for i in range(n_feedback))))
        return out[1], out[2]

    generator = time.process_time()
    results, posts = asyncio.run(run())
    generator = time.process_time() - generator
    statuses = [s for s, _, _ in results]
    took = sorted(t for _, _, t in results)
    print(f"\nreplica killed: {statuses.count(200)} of {n_requests} requests answered, "
          f"{statuses.count(503)} got 503 (latency p50 {took[len(took) // 2]:.1f} s, max "
          f"{took[-1]:.1f} s); {sum(s == 201 for s, _ in posts)} feedback posts acknowledged; "
          f"the load generator used {generator:.0f} CPU-s")
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert took[-1] < 30, took[-5:]  # no request hung, answered or not
    assert {s for s, _ in posts} == {201}
    # The replica comes back and serves.
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        view = replicas(cluster)
        if len(view) == 2 and victim["pid"] not in {r["pid"] for r in view}:
            break
        time.sleep(2)
    assert len(view) == 2 and victim["pid"] not in {r["pid"] for r in view}, view
    fresh = cluster.client().chat.completions.create(
        model=names[1], messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=4)
    assert fresh.choices[0].message.content is not None
    # Everything acknowledged is in the database, once.
    time.sleep(2.0)
    db = sqlite3.connect(home / "loraswap.db")
    acked = [rid for s, rid, _ in results if s == 200]
    marks = ",".join("?" * len(acked))
    logged = db.execute(f"SELECT COUNT(*), COUNT(DISTINCT id) FROM requests WHERE id IN ({marks})",
                        acked).fetchone()
    assert logged == (len(acked), len(acked))
    # How much of the client's wait was inside the ingresses (the rest: Serve's proxy, the
    # network stack and the client, on the same two cores).
    inside = sorted(ms / 1000 for (ms,) in db.execute(
        f"SELECT latency_ms FROM requests WHERE id IN ({marks})", acked))
    print(f"the same requests inside the ingresses: p50 {inside[len(inside) // 2]:.1f} s, "
          f"max {inside[-1]:.1f} s")
    cids = [cid for _, cid in posts]
    marks = ",".join("?" * len(cids))
    stored = db.execute(f"SELECT COUNT(*), COUNT(DISTINCT client_id) FROM feedback "
                        f"WHERE client_id IN ({marks})", cids).fetchone()
    assert stored == (len(cids), len(cids))


def test_stopping_the_server_leaves_the_cluster_running_without_it(cluster, ray_cluster):
    """Last in the module: SIGTERM removes loraswap's application from the cluster (its
    engine replicas end) and leaves the cluster itself, which loraswap did not start."""
    engines = [r["pid"] for r in replicas(cluster)]
    cluster.stop(timeout=90)
    assert cluster.proc.returncode == 0, cluster.tail()
    deadline = time.monotonic() + 30  # Serve ends an app's actors as it deletes it
    while (alive := [pid for pid in engines if psutil.pid_exists(pid)]) and \
            time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive, f"engine replicas outlived their app: {alive}"
    status = subprocess.run([RAY, "status"], env={**os.environ, **ray_cluster},
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert CONTROL_PLANE in status.stdout
