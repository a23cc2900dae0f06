"""What chat and completions share: limits, sampling parameters, running the engine, SSE.

Why token ids go to the engine (not text): we tokenize here with the base's tokenizer and chat
template, so the prompt length is known before the engine sees it (context checks give
OpenAI's 400 message) and BOS is written once, by the template.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel

from router import RequestRecord, RouteContext
from server.engine import ChoiceDelta, EngineOutput, GenParams, TokenLogprob
from server.errors import ClientDisconnected, InvalidRequest, describe
from server.metrics import Metrics
from server.mixtures import Mixtures
from server.protocol import Usage
from server.residency import Residency
from server.serving_models import ServingModels, Target

__all__ = ["Accumulated", "RequestMeta", "ServingBase", "sse", "with_system_prompt"]

log = logging.getLogger("loraswap.requests")


def sse(data: BaseModel | dict | str) -> str:
    if isinstance(data, BaseModel):
        payload = data.model_dump_json()
    else:
        payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n"


@dataclass(frozen=True)
class RequestMeta:
    """What the HTTP layer knows about a request beyond its body."""

    request_id: str
    user_header: str | None = None  # X-User-Id: the experiment unit when `user` is absent
    api_key_id: str | None = None
    # The HTTP layer's "has the client gone?": a non-streamed request is aborted when it has.
    is_disconnected: Callable[[], Awaitable[bool]] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-cased names (alias rules)


@dataclass
class Accumulated:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    cumulative_logprob: float | None = None

    def add(self, c: ChoiceDelta) -> None:
        if c.cumulative_logprob is not None:
            self.cumulative_logprob = c.cumulative_logprob
        self.text += c.text
        self.token_ids += c.token_ids
        if c.finish_reason:
            self.finish_reason = c.finish_reason
        if c.logprobs is not None:
            self.logprobs = (self.logprobs or []) + c.logprobs


def finish_reason(reason: str | None) -> str | None:
    # vLLM's "abort" (a request cut short, e.g. by a shutdown past its drain timeout) is kept,
    # as vLLM's own server does: reporting "stop" would claim a complete answer.
    return reason


@dataclass
class RequestBook:
    """What one HTTP request did, across its prompts and choices."""

    target: Target
    endpoint: str
    prompt: list[dict] | str | list[str] | None
    arrived: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    texts: dict[tuple[int, int], str] = field(default_factory=dict)  # (prompt, choice) -> text
    finish0: str | None = None
    status: int = 200

    def add(self, p: int, c: ChoiceDelta) -> None:
        self.completion_tokens += len(c.token_ids)
        self.texts[(p, c.index)] = self.texts.get((p, c.index), "") + c.text
        if (p, c.index) == (0, 0) and c.finish_reason:
            self.finish0 = c.finish_reason

    def record(self) -> RequestRecord:
        t = self.target
        texts = [self.texts[k] for k in sorted(self.texts)]
        return RequestRecord(
            request_id=t.request_id, model=t.requested, served=t.model_id, route=t.route,
            user=t.user, api_key_id=t.api_key_id, endpoint=self.endpoint,
            status_code=self.status, latency_ms=(time.monotonic() - self.started) * 1000,
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
            finish_reason=finish_reason(self.finish0), prompt=self.prompt,
            output=self.texts.get((0, 0), ""), outputs=texts if len(texts) > 1 else None,
            ts=self.arrived)


def with_system_prompt(messages: list[dict], system_prompt: str | None) -> list[dict]:
    """A prompt variant's (or an alias's) system prompt goes first. Merged into the client's
    own system message when there is one: some chat templates refuse two system turns."""
    if not system_prompt:
        return messages
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{system_prompt}\n\n{messages[0]['content']}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": system_prompt}, *messages]


class ServingBase:
    endpoint = "base"
    log_endpoint = "base"  # the request log's name for it

    def __init__(self, models: ServingModels, residency: Residency, engine, tokenizer,
                 metrics: Metrics, max_model_len: int, max_n: int,
                 request_log: Callable[[RequestRecord], bool] | None = None,
                 mixtures: Mixtures | None = None) -> None:
        self.request_log = request_log
        self.mixtures = mixtures
        self.models = models
        self.residency = residency
        self.engine = engine
        self.tokenizer = tokenizer
        self.metrics = metrics
        self.max_model_len = max_model_len
        self.max_n = max_n

    async def model_of(self, req) -> str:
        """The model to resolve: the request's, or its `merged_adapters` mixture's version."""
        if req.merged_adapters is None:
            return req.model
        if self.mixtures is None:
            raise InvalidRequest("merged_adapters is not enabled on this server",
                                 param="merged_adapters")
        return await self.mixtures.model_for(req.model, req.merged_adapters)

    async def target(self, model: str, user: str | None, meta: RequestMeta,
               metadata: Mapping[str, str] | None = None,
               prompt: Callable[[], str] | None = None) -> Target:
        """Resolve `model` (an alias routes by `user`, else the X-User-Id header; its rules
        may look at the headers, `metadata`, the key and the prompt's text)."""
        unit = user or meta.user_header
        context = RouteContext(headers=meta.headers, metadata=metadata or {},
                               api_key_id=meta.api_key_id, prompt=prompt)
        return dataclasses.replace(await self.models.resolve_fresh(model, unit, context),
                                   request_id=meta.request_id, api_key_id=meta.api_key_id)

    def gen_params(self, *, prompt_len: int, max_tokens: int | None, req, logprobs: int | None,
                   what: str = "messages", n: int | None = None) -> GenParams:
        """`n`: how many choices to generate, when more than `req.n` (completions' best_of)."""
        limit = self.max_model_len
        if prompt_len >= limit:
            raise InvalidRequest(f"This model's maximum context length is {limit} tokens. "
                                 f"However, your {what} resulted in {prompt_len} tokens. Please "
                                 f"reduce the length of the {what}.", param=what,
                                 code="context_length_exceeded")
        remaining = limit - prompt_len
        if max_tokens is None:
            max_tokens = remaining
        elif max_tokens > remaining:
            raise InvalidRequest(f"This model's maximum context length is {limit} tokens. "
                                 f"However, you requested {prompt_len + max_tokens} tokens "
                                 f"({prompt_len} in the {what}, {max_tokens} in the completion). "
                                 f"Please reduce the length of the {what} or completion.",
                                 param="max_tokens", code="context_length_exceeded")
        n, n_param = (req.n, "n") if n is None else (n, "best_of")
        if n > self.max_n:
            raise InvalidRequest(f"Invalid value for 'n': at most {self.max_n} choices per "
                                 f"request, got {n}.", param=n_param)
        temperature = 1.0 if req.temperature is None else req.temperature
        if n > 1 and temperature == 0:
            raise InvalidRequest("Invalid value for 'n': n > 1 needs temperature > 0 (greedy "
                                 "decoding would return n identical choices).", param="n")
        return GenParams(max_tokens=max_tokens, temperature=temperature,
                         top_p=1.0 if req.top_p is None else req.top_p, n=n,
                         stop=tuple(req.stop_list()), seed=req.seed, logprobs=logprobs,
                         stream=req.stream, min_tokens=min(req.min_tokens, max_tokens),
                         ignore_eos=req.ignore_eos,
                         frequency_penalty=req.frequency_penalty or 0.0,
                         presence_penalty=req.presence_penalty or 0.0,
                         repetition_penalty=(1.0 if req.repetition_penalty is None
                                             else req.repetition_penalty),
                         top_k=0 if req.top_k in (None, -1) else req.top_k,
                         min_p=req.min_p or 0.0, logit_bias=self.logit_bias(req.logit_bias),
                         stop_token_ids=self.token_ids(req.stop_token_ids, "stop_token_ids"),
                         structured=req.structured(), skip_special_tokens=True)

    def token_ids(self, ids: list[int] | None, param: str) -> tuple[int, ...]:
        vocab = len(self.tokenizer)
        bad = [i for i in ids or () if not 0 <= i < vocab]
        if bad:
            raise InvalidRequest(f"Invalid value for '{param}': token ids must be in "
                                 f"[0, {vocab}), got {bad[0]}", param=param)
        return tuple(ids or ())

    def logit_bias(self, bias: dict[str, float] | None) -> dict[int, float] | None:
        """OpenAI's keys are token ids as strings."""
        if not bias:
            return None
        try:
            ids = {int(k): v for k, v in bias.items()}
        except ValueError:
            raise InvalidRequest("Invalid value for 'logit_bias': keys must be token ids "
                                 "(integers as strings)", param="logit_bias") from None
        self.token_ids(list(ids), "logit_bias")
        return ids

    async def outputs(self, target: Target, prompt_ids: list[int], params: GenParams,
                      book: RequestBook, p: int = 0) -> AsyncIterator[EngineOutput]:
        """Engine outputs for prompt `p` of a request, with the adapter held, the metrics kept
        and every choice's text noted in the request's `book` (logged once, at its end)."""
        rid = uuid.uuid4().hex
        self.metrics.inference.labels(target.model_id, self.endpoint, str(params.stream)).inc()
        self.metrics.in_flight.inc()
        started = time.monotonic()
        first = True
        completion = 0
        book.prompt_tokens += len(prompt_ids)
        try:
            async with self.residency.hold(target.version):
                async for out in self.engine.generate(
                        rid, prompt_ids, params, self.residency.engine_adapter(target.version)):
                    n_new = sum(len(c.token_ids) for c in out.choices)
                    if first and n_new:
                        self.metrics.ttft.observe(time.monotonic() - started)
                        first = False
                    completion += n_new
                    for c in out.choices:
                        book.add(p, c)
                    yield out
        except BaseException as exc:
            book.status = describe(exc)[0] if isinstance(exc, Exception) else 499
            raise
        finally:
            self.metrics.in_flight.dec()
            self.metrics.prompt_tokens.inc(len(prompt_ids))
            self.metrics.completion_tokens.inc(completion)
            self.metrics.latency.labels(self.endpoint).observe(time.monotonic() - started)

    def book(self, target: Target, prompt: list[dict] | str | list[str] | None) -> RequestBook:
        return RequestBook(target, self.log_endpoint, prompt)

    def log(self, book: RequestBook) -> None:
        """One log line and one request-log record per HTTP request, whatever its prompts
        and choices (`prompt` and outputs are stored only when retention is on)."""
        record = book.record()
        log.info("request_id=%s model=%s requested=%s user=%s prompt_tokens=%d "
                 "completion_tokens=%d latency_ms=%.0f", record.request_id, record.served,
                 record.model, record.user or "-", record.prompt_tokens,
                 record.completion_tokens, record.latency_ms)
        if self.request_log is not None:
            self.request_log(record)

    async def collect(self, target: Target, prompt_ids: list[int], params: GenParams,
                      book: RequestBook, p: int = 0) -> list[Accumulated]:
        acc = [Accumulated() for _ in range(params.n)]
        async for out in self.outputs(target, prompt_ids, params, book, p):
            for c in out.choices:
                acc[c.index].add(c)
        return acc

    @staticmethod
    async def unless_disconnected(meta: RequestMeta, work: Awaitable, every: float = 0.25):
        """Run `work`; if the client goes away first, cancel it, which aborts its engine
        requests (a streamed response is cancelled by the server itself)."""
        task = asyncio.ensure_future(work)
        if meta.is_disconnected is None:
            return await task
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            if await meta.is_disconnected():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise ClientDisconnected(meta.request_id)

    @staticmethod
    def usage(prompt_tokens: int, completion_tokens: int) -> Usage:
        return Usage.of(prompt_tokens, completion_tokens)

    @staticmethod
    def stream_error(exc: Exception) -> str:
        """An error after the 200 went out: the same body the table gives, as an SSE event."""
        status, body = describe(exc)
        if status >= 500:
            log.error("stream failed", exc_info=exc)
        return sse(body)
