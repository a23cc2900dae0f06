"""How many logged requests per second one control-plane node sustains.

    .venv/bin/python -m benchmarks.control_plane                 # 20 s, 64 clients
    .venv/bin/python -m benchmarks.control_plane --duration 60 --concurrency 128

Scaled out (docs/scaling.md), every request still passes through the control plane: the
ingress routes it, logs it in the one SQLite database, and feedback posts land there too.
Engine replicas add generation capacity; the control plane does not grow with them. This
measures its ceiling without the engines: the real ingress app (`wiring.build_app`, the
whole request path, request log, feedback) under one uvicorn process, over an engine that
answers at once, so only routing, logging and SQLite count. The load generator runs in this
process; the server in a child. Every answered request must be in the `requests` table and
every acknowledged feedback post in `feedback`, or the run fails.

Output: bench-results/control-plane-<timestamp>/results.json and a line per measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

__all__ = ["InstantEngine", "main"]

ROOT = Path(__file__).resolve().parent.parent
BASE_ID = "loraswap-base"


class InstantEngine:
    """The `Engine` interface, answering every request with four tokens at once."""

    def __init__(self, config) -> None:
        self.config = config
        self.is_cpu, self.lora_kernels, self.guard_active = True, False, False
        self.start_seconds = 0.0
        self.max_loras, self.slots_reason = config.max_loras or 4, "instant"
        self._running = False
        self._loaded: set[int] = set()
        self._in_flight = 0

    async def start(self) -> None:
        self._running = True

    def shutdown(self) -> None:
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    async def add_adapter(self, name: str, int_id: int, path: Path) -> None:
        self._loaded.add(int_id)

    async def remove_adapter(self, int_id: int) -> bool:
        return int_id in self._loaded and not self._loaded.discard(int_id)

    def unfinished(self) -> int:
        return self._in_flight

    async def loaded_ids(self) -> set[int]:
        return set(self._loaded)

    async def generate(self, request_id, prompt_ids, params, adapter) -> AsyncIterator:
        from server.engine import ChoiceDelta, EngineOutput

        self._in_flight += 1
        try:
            yield EngineOutput(len(prompt_ids), [
                ChoiceDelta(index=c, text="ok ok", token_ids=[5, 6, 5, 6], finish_reason="stop")
                for c in range(params.n)], True)
        finally:
            self._in_flight -= 1


def serve(home: Path, base: Path, port: int) -> None:
    """The child: the ingress app over an InstantEngine, in one uvicorn process."""
    from loraswap.settings import Settings
    from loraswap.wiring import build_app, engine_config, server_config
    from server.app import run

    settings = Settings.from_env(home=home, base_model=base, base_model_name=BASE_ID,
                                 log_all_requests=True, host="127.0.0.1", port=port)
    config = server_config(settings)
    run(build_app(settings, config=config, engine=InstantEngine(engine_config(settings))),
        config)


async def _drive(url: str, concurrency: int, duration: float) -> dict:
    body = {"model": BASE_ID, "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": "copy: the cat sat"}]}
    answered: list[str] = []
    acked: list[str] = []
    errors = 0
    stop_at = time.monotonic() + duration
    limits = httpx.Limits(max_connections=concurrency + 8)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

        async def client(i: int) -> None:
            nonlocal errors
            n = 0
            while time.monotonic() < stop_at:
                r = await http.post("/v1/chat/completions", json=body)
                if r.status_code != 200:
                    errors += 1
                    continue
                rid = r.headers["X-Request-Id"]
                answered.append(rid)
                n += 1
                if n % 2 == 0:  # every other answer gets a thumb, as a busy app's users might
                    cid = f"cp-{uuid.uuid4().hex}"
                    f = await http.post("/v1/feedback", json={
                        "request_id": rid, "thumb": "up", "client_id": cid})
                    if f.status_code == 201:
                        acked.append(cid)
                    else:
                        errors += 1

        started = time.monotonic()
        await asyncio.gather(*(client(i) for i in range(concurrency)))
        elapsed = time.monotonic() - started
    return {"answered": answered, "acked": acked, "errors": errors, "elapsed": elapsed}


def _count(db: Path, table: str, column: str, values: list[str]) -> int:
    conn = sqlite3.connect(db)
    try:
        found = 0
        for i in range(0, len(values), 500):
            chunk = values[i:i + 500]
            found += conn.execute(f"SELECT COUNT(DISTINCT {column}) FROM {table} WHERE "
                                  f"{column} IN ({','.join('?' * len(chunk))})",
                                  chunk).fetchone()[0]
        return found
    finally:
        conn.close()


def run(concurrency: int, duration: float, out: Path, base: Path) -> dict:
    from loraswap.launcher import free_port, start_process

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="loraswap-cp-") as tmp:
        home, port = Path(tmp), free_port()
        server = start_process([sys.executable, "-m", "benchmarks.control_plane", "--serve",
                                str(home), "--port", str(port), "--base", str(base)],
                               port=port, log=out / "server.log", cwd=ROOT, timeout=120,
                               name="control-plane", own_group=True)
        try:
            asyncio.run(_drive(server.url, 8, 2.0))  # warm-up, not counted
            result = asyncio.run(_drive(server.url, concurrency, duration))
        finally:
            server.stop(timeout=60)  # drains: the request log is flushed on SIGTERM
        logged = _count(home / "loraswap.db", "requests", "id", result["answered"])
        stored = _count(home / "loraswap.db", "feedback", "client_id", result["acked"])
    elapsed = result["elapsed"]
    summary = {
        "concurrency": concurrency, "duration_s": round(elapsed, 2),
        "requests_answered": len(result["answered"]), "requests_logged": logged,
        "feedback_acknowledged": len(result["acked"]), "feedback_stored": stored,
        "errors": result["errors"],
        "logged_requests_per_s": round(logged / elapsed, 1),
        "feedback_per_s": round(stored / elapsed, 1),
        "writes_per_s": round((logged + stored) / elapsed, 1),
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.control_plane", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--base", type=Path, help="base model dir (its tokenizer is used; default: "
                   "the embedded base)")
    p.add_argument("--out", type=Path, default=ROOT / "bench-results")
    p.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the child: its home
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.base is None:
        from loraswap.settings import Settings

        args.base = Settings.from_env().base_model_dir
    if args.serve is not None:
        serve(args.serve, args.base, args.port)
        return 0
    out = args.out / time.strftime("control-plane-%Y%m%d-%H%M%S")
    print(f"control plane: {args.concurrency} clients for {args.duration:.0f} s ...",
          file=sys.stderr, flush=True)
    s = run(args.concurrency, args.duration, out, args.base)
    print(json.dumps(s, indent=2))
    lost = (s["requests_answered"] - s["requests_logged"]) + (
        s["feedback_acknowledged"] - s["feedback_stored"])
    print(f"{s['logged_requests_per_s']} logged requests/s and {s['feedback_per_s']} feedback "
          f"posts/s on one control-plane process; {lost} acknowledged writes missing; "
          f"results in {out}", file=sys.stderr)
    return 1 if lost or s["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
