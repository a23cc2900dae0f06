"""The request log: records the server hands over on the hot path, written in batches by a
background thread so an event loop never waits on SQLite.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from router.migrations import open_db

__all__ = ["RequestLogWriter", "RequestRecord", "Route"]

log = logging.getLogger("loraswap.router")

@dataclass(frozen=True, slots=True)
class Route:
    """Where an alias request goes. `target` is what the server serves."""

    alias: str
    experiment: str | None  # None: a rule or the alias's pointer chose, not an experiment
    experiment_id: int | None
    variant: str  # the variant's key ("name@version", "base" or a prompt variant's name)
    target: str  # registry ref "name@version", or the base model id when is_base
    is_base: bool
    unit: str | None  # the assignment unit (user); None = this request is its own unit
    bucket: int | None  # None when paused (everyone gets the control)
    exposed: bool  # False while paused: served, but not counted in the analysis
    retention: bool  # keep prompt and output for this request
    system_prompt: str | None = None  # a prompt variant's (or pointer's, or rule's)
    rule: str | None = None  # the routing rule that matched


@dataclass(slots=True)
class RequestRecord:
    """What the server knows once a request is answered (or failed). The server builds it
    (request ids are the server's); the router only stores it."""

    request_id: str
    model: str  # what the client asked for: alias, adapter ref, or base id
    served: str  # what answered: "name@version" or the base model id
    route: Route | None = None
    user: str | None = None  # OpenAI `user` field or X-User-Id header
    api_key_id: str | None = None  # the key that made the request (feedback checks it)
    endpoint: str = "chat.completions"  # or "completions"
    status_code: int = 200
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    prompt: list[dict] | str | None = None  # chat messages or the text prompt
    output: str | None = None  # the first choice's text (of the first prompt)
    outputs: list[str] | None = None  # every choice's text, when there is more than one
    ts: float = field(default_factory=time.time)  # when the request arrived, unix seconds

    def row(self, retain: bool) -> tuple:
        route = self.route
        prompt = None
        if retain and self.prompt is not None:
            prompt = json.dumps(self.prompt, ensure_ascii=False)
        return (
            self.request_id, self.ts, self.model,
            route.experiment_id if route else None, route.variant if route else None,
            int(route.exposed) if route else 0, self.served,
            route.unit if route else self.user, self.user, self.api_key_id, self.endpoint,
            self.status_code, self.latency_ms, self.prompt_tokens, self.completion_tokens,
            self.finish_reason, prompt, self.output if retain else None,
            json.dumps(self.outputs, ensure_ascii=False) if retain and self.outputs else None,
        )


_INSERT = (
    "INSERT OR IGNORE INTO requests (id, ts, alias, experiment_id, variant, exposed, "
    "model_served, unit, user, api_key_id, endpoint, status_code, latency_ms, prompt_tokens, "
    "completion_tokens, finish_reason, prompt, output, outputs) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class RequestLogWriter:
    """A queue and one thread that drains it in transactions of up to `batch` rows."""

    def __init__(self, db_path: Path, batch: int = 500) -> None:
        self._db_path = db_path
        self._batch = batch
        self._queue: queue.SimpleQueue[tuple | threading.Event | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.written = 0
        self.failed = 0

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="loraswap-request-log", daemon=True
                    )
                    self._thread.start()

    def put(self, row: tuple) -> None:
        self._ensure_started()
        self._queue.put(row)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued before this call is committed."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self) -> None:
        if self._thread is not None:
            self.flush()
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        db = open_db(self._db_path)
        try:
            while True:
                item = self._queue.get()
                rows: list[tuple] = []
                markers: list[threading.Event] = []
                stop = False
                while True:
                    if item is None:
                        stop = True
                    elif isinstance(item, threading.Event):
                        markers.append(item)
                    else:
                        rows.append(item)
                    if stop or len(rows) >= self._batch:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if rows:
                    self._write(db, rows)
                for marker in markers:
                    marker.set()
                if stop:
                    return
        finally:
            db.close()

    def _write(self, db, rows: list[tuple]) -> None:
        for attempt in range(3):
            try:
                with db.conn:
                    db.conn.executemany(_INSERT, rows)
                self.written += len(rows)
                return
            except Exception as exc:  # a locked database must not kill the writer
                log.warning("request log write failed (attempt %d): %s", attempt + 1, exc)
                time.sleep(0.2 * (attempt + 1))
        self.failed += len(rows)
        log.error("request log: dropped %d rows after 3 attempts", len(rows))
